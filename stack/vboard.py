"""Start and control virtual boards as real processes (the `baochay-vboard` launcher)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .console import Console
from .procs import stop_process

ROOT = Path(__file__).resolve().parent.parent


class VirtualBoard:
    """One `baochay-vboard` process. `flash` persists across stop/start, like a board's flash."""

    def __init__(self, flash: Path, device_config: Path | None = None, heap: str | None = None,
                 image: Path | None = None, log: Path | None = None, board: str | None = None,
                 rom: bool = True):
        self.flash = Path(flash)
        self.device_config = device_config
        self.heap = heap
        self.image = image
        self.log = log
        self.board = board
        self.rom = rom  # False: the .mpy modules are loaded into the heap (baochay-vboard --no-rom)
        self.proc: subprocess.Popen | None = None
        self.port: str | None = None
        self.console: Console | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "provisioning.vboard"]
        if self.image:
            cmd += ["--image", str(self.image)]
        else:
            cmd += ["--flash", str(self.flash)]
            if self.device_config:
                cmd += ["--device-config", str(self.device_config)]
            if self.board:
                cmd += ["--board", self.board]
        if self.heap:
            cmd += ["--heap", self.heap]
        if not self.rom:
            cmd.append("--no-rom")
        if self.log:
            cmd += ["--log", str(self.log)]
        return cmd

    def start(self, wait_boot: bool = True, timeout: float = 20.0) -> VirtualBoard:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            cwd=ROOT, env=env)
        assert proc.stdout is not None and proc.stderr is not None  # both are pipes
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("console="):
            err = proc.stderr.read().decode() if proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"virtual board did not start: {line!r} {err}")
        self.port = line.split("=", 1)[1]
        self.console = Console(self.port)
        if wait_boot:
            self.console.wait_for(lambda m: m.get("ev") in ("boot", "fault"), timeout)
        return self

    def power_cut(self, wait_boot: bool = True, timeout: float = 20.0) -> None:
        """SIGKILL the firmware; the board comes back on the same flash and the same console."""
        con = self._console()
        mark = con.mark()
        self._proc().send_signal(signal.SIGUSR1)
        if wait_boot:
            con.wait_for(lambda m: m.get("ev") == "boot", timeout, since=mark)

    def kill(self) -> None:
        """SIGKILL the whole board (launcher and firmware) at once."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_console()

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.proc, timeout)
        self._close_console()

    def _close_console(self) -> None:
        if self.console:
            self.console.close()
            self.console = None

    def request(self, cmd: str, **args) -> dict:
        return self._console().request(cmd, **args)

    def wait_exit(self, timeout: float) -> int | None:
        """The launcher's exit code, or None when it is still running after `timeout`."""
        proc = self._proc()
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        return proc.poll()

    def _proc(self) -> subprocess.Popen:
        if self.proc is None:
            raise RuntimeError("the virtual board is not started: call start() first")
        return self.proc

    def _console(self) -> Console:
        if self.console is None:
            raise RuntimeError("the virtual board has no console: call start() first")
        return self.console

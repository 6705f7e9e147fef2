"""Start and control virtual boards as real processes (the `baochay-vboard` launcher)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from .console import Console
from .procs import Process


class VirtualBoard:
    """One `baochay-vboard` process. `flash` persists across stop/start, like a board's flash."""

    def __init__(self, flash: Path, device_config: Path | None = None, heap: str | None = None,
                 image: Path | None = None, log: Path | None = None, board: str | None = None,
                 rom: bool = True, console: type[Console] = Console, name: str | None = None):
        self.flash = Path(flash)
        self.device_config = device_config
        self.heap = heap
        self.image = image
        self.log = log
        self.board = board
        self.rom = rom  # False: the .mpy modules are loaded into the heap (baochay-vboard --no-rom)
        self.console_type = console  # what start() opens the pty with (the HIL suite's Dut, say)
        self.name = name
        self.process: Process | None = None
        self.port: str | None = None
        self.console: Console | None = None

    @property
    def proc(self) -> subprocess.Popen | None:
        """The launcher process while it runs."""
        return self.process.proc if self.process else None

    @property
    def pid(self) -> int:
        return self._process().pid

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
        """Start the launcher, open its console and (wait_boot) wait for the firmware's `boot` or
        `fault` line. The launcher's own output goes to <log>.launcher.log beside the board's log."""
        launcher_log = self.log.with_name(self.log.stem + ".launcher.log") if self.log else None
        self.process = Process(self.command(), name=f"virtual board {self.name or self.flash.name}",
                               log=launcher_log, ready="console=")
        # generous: the launcher compiles the firmware into its ROM image before it prints the line
        line = self.process.start(timeout=120)
        self.port = line.split("=", 1)[1]
        con = self.console = self.console_type(self.port, name=self.name)
        if wait_boot:
            con.wait_for(lambda m: m.get("ev") in ("boot", "fault"), timeout)
        return self

    def power_cut(self, wait_boot: bool = True, timeout: float = 20.0) -> None:
        """SIGKILL the firmware; the board comes back on the same flash and the same console."""
        con = self._console()
        mark = con.mark()
        self._process().signal(signal.SIGUSR1)
        if wait_boot:
            con.wait_for(lambda m: m.get("ev") == "boot", timeout, since=mark)

    def kill(self) -> None:
        """SIGKILL the whole board (launcher and firmware) at once."""
        if self.process:
            self.process.kill()
        self._close_console()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process:
            self.process.stop(timeout)
        self._close_console()

    def _close_console(self) -> None:
        if self.console:
            self.console.close()
            self.console = None

    def request(self, cmd: str, **args) -> dict:
        return self._console().request(cmd, **args)

    def wait_exit(self, timeout: float) -> int | None:
        """The launcher's exit code, or None when it is still running after `timeout`."""
        try:
            return self._process().wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _process(self) -> Process:
        if self.process is None:
            raise RuntimeError("the virtual board is not started: call start() first")
        return self.process

    def _console(self) -> Console:
        if self.console is None:
            raise RuntimeError("the virtual board has no console: call start() first")
        return self.console

"""The whole system around one emulated ESP32: Mosquitto, the 114 intake and the bridge on loopback,
and a device provisioned for them and flashed as an installer does, over the chip's ROM loader.
Used by the emulated-ESP32 tests and `bench/firmware_heap --esp32`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .esp32_qemu import (
    GUEST_HOST,
    DownloadMode,
    EmulatedBoard,
    Emulator,
    find_emulator,
    merged_flash,
    provision,
)
from .observer import Observer
from .procs import child_env
from .run import Stack
from .tls import make_test_pki


class FlashFailed(RuntimeError):
    pass


class ChipSystem:
    def __init__(self, workdir: Path, dev: str, board: str = "esp32-devkitc", emulator: Emulator | None = None,
                 via_rom_loader: bool = True, simulated_sensors: bool = False, tls: bool = False, **overrides):
        self.dir = Path(workdir)
        self.dev = dev
        self.board_name = board
        self.emulator = emulator or find_emulator()
        self.via_rom_loader = via_rom_loader  # False: boot flash --merge's image as it is
        self.simulated_sensors = simulated_sensors  # the rig's sensors on the chip (rig_sensors: simulated)
        self.tls = tls  # the device on the broker's TLS listener, checking it against the project's CA
        self.overrides = overrides  # device config keys, as `baochay-provision new-device` would set them
        self.stack = Stack(self.dir / "stack", 0, board=board)
        self.board: EmulatedBoard | None = None
        self.observer: Observer | None = None
        self.cfg: dict = {}
        self.merged: Path | None = None
        self.flash_output = ""
        self.flash_identical: bool | None = None

    def up(self) -> ChipSystem:
        st = self.stack
        st.dir.mkdir(parents=True, exist_ok=True)
        st.sites = []
        # the server certificate names the address the device dials, as a real broker's names its host
        pki = make_test_pki(self.dir / "pki", hosts=(GUEST_HOST, "127.0.0.1", "localhost")) if self.tls else None
        st.start_broker(pki)
        broker = st._broker()
        self.device_port = broker.tls_port if pki else broker.port
        self.cfg, self.merged = provision(self.dir / "devices", self.dev, self.device_port, self.dir / "image",
                                          self.emulator, board=self.board_name, tls=self.tls,
                                          ca_der=pki.ca_der() if pki else None,
                                          simulated_sensors=self.simulated_sensors, **self.overrides)
        broker.add_user(self.dev, self.cfg["mqtt"]["password"])
        broker.reload()
        st.sites = [{"cfg": self.cfg}]
        st.start_intake()
        st.start_bridge()
        self.observer = Observer("127.0.0.1", broker.port, "watcher", st.watch_pw, persistent=True,
                                 name=f"watch-{self.dev}")
        flash = self.dir / "flash.bin"
        if self.via_rom_loader:
            self.flash_with_esptool(flash)
        else:
            flash.write_bytes(self.merged.read_bytes())
        self.board = EmulatedBoard(flash, emulator=self.emulator, forwards=(self.device_port,),
                                   log=self.dir / "qemu.log", name=self.dev, board=self.board_name)
        self.board.start()
        return self

    def flash_with_esptool(self, flash: Path) -> None:
        """A chip with stock MicroPython and an empty filesystem, given the device's image by the
        installer's `flash` over the ROM serial loader (`--firmware` works the same, but writing
        MicroPython costs the emulator some 100 s)."""
        merged_flash(self.emulator.require_firmware(), None, flash)
        with DownloadMode(flash, self.emulator, log=self.dir / "rom-loader.log") as rom:
            r = subprocess.run([sys.executable, "-m", "provisioning.cli", "flash",
                                "--devices-dir", str(self.dir / "devices"), "--device", self.dev,
                                "--port", rom.url, "--stub", "legacy"],
                               cwd=self.dir, capture_output=True, text=True, timeout=600, env=child_env())
        self.flash_output = r.stdout + r.stderr
        (self.dir / "flash-cli.log").write_text(self.flash_output)
        if r.returncode != 0:
            raise FlashFailed(f"baochay-provision flash failed ({r.returncode}):\n{self.flash_output[-3000:]}")
        # before the chip boots and writes its own files: what esptool wrote, byte for byte, against
        # the merged image an installer would write at 0x0 (`flash --merge`)
        assert self.merged is not None
        merged = self.merged.read_bytes()
        self.flash_identical = flash.read_bytes()[:len(merged)] == merged

    def down(self) -> None:
        if self.observer:
            self.observer.close()
        if self.board:
            self.board.stop()
        self.stack.down()

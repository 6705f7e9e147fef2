"""The emulated ESP32: the installer's flash image booted in Espressif's QEMU, beside the virtual board.

What runs is what an installer flashes: stock MicroPython at 0x1000 and our LittleFS image at
0x200000, as `baochay-provision flash --merge` writes them, or as `flash` writes them over the
emulated ROM loader (`download_mode`). UART0 is the console, on a pty that stays the same across
resets and power cuts, so the one console client of every board (stack/console.py) talks to it.
The device's files are read back from the flash file with littlefs-python.

Network: QEMU's user network with restrict=on. The device joins the emulated access point with the
real `network.WLAN` code, and reaches only the forwarded ports: each rule sends the device's
connections to GUEST_HOST:port to 127.0.0.1:port on this machine (stack/relay.py). Nothing else
answers, not even a name server, so NTP cannot leave the test.

The emulator is found through BAOCHAY_ESP32_QEMU (its folder, or the qemu binary), in
../shared/tools/esp32-qemu from the project's root, or as qemu-system-xtensa on PATH; where it is
absent, EmulatorMissing says how to get it, and the tests skip with that line.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .console import Console
from .ports import free_port, wait_port
from .procs import ROOT, Process, StartError

ENV = "BAOCHAY_ESP32_QEMU"
FIRMWARE_ENV = "BAOCHAY_MICROPYTHON_ESP32"
SHARED = ROOT.parent / "shared" / "tools" / "esp32-qemu"
GUEST_HOST = "10.0.2.100"  # the address the device is provisioned with; forwarded to loopback
WIFI_SSID = "PICSimLabWifi"  # an open access point of the emulated Wi-Fi
# Every flash operation costs the emulator some 15-35 ms (QEMU retranslates the code the flash cache
# held), against well under a millisecond on silicon: writing three fault events in a row can hold the
# main loop for over 10 s there, the product's watchdog default. The emulated device gets 30 s; the
# watchdog test still shows a hung loop reset by the hardware watchdog.
EMULATED_WDT_MS = 30000
INSTALL_HINT = (
    "the emulated ESP32 needs Espressif's QEMU: install its release (ESP-IDF: idf_tools.py install "
    "qemu-xtensa; PICSimLab's fork lcgamboa/qemu for Wi-Fi) and the MicroPython image from "
    f"micropython.org/download/ESP32_GENERIC, then set {ENV} to the folder holding qemu-system-xtensa, "
    "esp32-v3-rom.bin and micropython/ESP32_GENERIC-*.bin (or put qemu-system-xtensa on PATH); "
    "on Debian it also needs libslirp0"
)


class EmulatorMissing(RuntimeError):
    """No usable emulator here; the message says how to install one."""


@dataclass(frozen=True)
class Emulator:
    qemu: Path  # boots the image with Wi-Fi (machine esp32-picsimlab)
    flasher: Path  # serves esptool in download mode (Espressif's build; the Wi-Fi build corrupts writes)
    rom_dir: Path | None  # the ESP32 mask ROM images (-L), when not in QEMU's own data folder
    firmware: Path | None  # stock MicroPython for ESP32, flashed at 0x1000

    def require_firmware(self) -> Path:
        if self.firmware is None:
            raise EmulatorMissing(f"no MicroPython ESP32 image found (set {FIRMWARE_ENV}); " + INSTALL_HINT)
        return self.firmware


def _usable(qemu: Path) -> str | None:
    """Why this binary cannot run the ESP32 machine, or None."""
    try:
        r = subprocess.run([str(qemu), "-machine", "help"], capture_output=True, text=True, timeout=20)
    except OSError as e:
        return f"{qemu}: {e}"
    except subprocess.TimeoutExpired:
        return f"{qemu}: no answer to -machine help"
    if r.returncode != 0:
        first = (r.stderr or r.stdout).strip().splitlines()[:1]
        return f"{qemu}: {first[0] if first else f'exit status {r.returncode}'}"
    return None if "esp32" in r.stdout else f"{qemu} has no esp32 machine"


def find_emulator() -> Emulator:
    """The emulator to use, or EmulatorMissing saying what was tried and how to install one."""
    tried = []
    candidates: list[Path] = []
    env = os.environ.get(ENV)
    if env:
        candidates.append(Path(env))
    candidates.append(SHARED)
    on_path = shutil.which("qemu-system-xtensa")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        folder = c if c.is_dir() else c.parent
        qemu = folder / "qemu-system-xtensa" if c.is_dir() else c
        if not qemu.exists():
            tried.append(f"{qemu}: not found")
            continue
        why = _usable(qemu)
        if why:
            tried.append(why)
            continue
        flasher = folder / "qemu-system-xtensa-espressif"
        rom_dir = folder if (folder / "esp32-v3-rom.bin").exists() else None
        fw_env = os.environ.get(FIRMWARE_ENV)
        images = sorted((folder / "micropython").glob("ESP32_GENERIC-*.bin")) if (folder / "micropython").is_dir() else []
        firmware = Path(fw_env) if fw_env else (images[-1] if images else None)
        return Emulator(qemu, flasher if flasher.exists() and not _usable(flasher) else qemu, rom_dir, firmware)
    raise EmulatorMissing(INSTALL_HINT + ("; tried: " + "; ".join(tried) if tried else ""))


def merged_flash(firmware: Path, fs_image: Path | None, out: Path, flash_size: int = 4 << 20,
                 firmware_offset: int = 0x1000, fs_offset: int = 0x200000) -> Path:
    """A whole flash chip as a file: erased (0xFF), MicroPython at its offset, our image (if any) at
    its own; what a factory-fresh board with MicroPython looks like when fs_image is None."""
    data = bytearray(b"\xff" * flash_size)
    fw = Path(firmware).read_bytes()
    data[firmware_offset:firmware_offset + len(fw)] = fw
    if fs_image is not None:
        fs = Path(fs_image).read_bytes()
        data[fs_offset:fs_offset + len(fs)] = fs
    out.write_bytes(bytes(data))
    out.chmod(0o600)  # it holds the device key
    return out


class _SerialPty:
    """A pty whose far end is QEMU's UART0, reconnected each time QEMU starts: the console port a
    client opens once and keeps across resets and power cuts. `on_line` sees every line the chip
    prints, whoever holds the port."""

    def __init__(self, on_line: Callable[[bytes], None] | None = None) -> None:
        self.on_line = on_line
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes as they are: no echo, no CR/LF translation
        self.path = os.ttyname(self._slave)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="qemu-uart-accept", daemon=True).start()
        threading.Thread(target=self._to_device, name="qemu-uart-in", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                old, self._conn = self._conn, conn
            if old:
                old.close()
            threading.Thread(target=self._from_device, args=(conn,), name="qemu-uart-out", daemon=True).start()

    def _from_device(self, conn: socket.socket) -> None:
        pending = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            try:
                os.write(self.master, data)
            except OSError:
                return
            if self.on_line:
                *lines, pending = (pending + data).split(b"\n")
                pending = pending[-4096:]  # a line that never ends is not kept whole
                for line in lines:
                    self.on_line(line.rstrip(b"\r"))

    def _to_device(self) -> None:
        while not self._closed:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            with self._lock:
                conn = self._conn
            if conn is not None:
                try:
                    conn.sendall(data)
                except OSError:
                    pass  # the chip is resetting: what was typed meanwhile is lost, as on a cable

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            if self._conn:
                self._conn.close()
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class EmulatedBoard:
    """One emulated ESP32 on a flash file. `forwards`: ports on 127.0.0.1 the device may reach, at
    GUEST_HOST with the same port number. start() boots it; power_cut() kills QEMU and boots it again
    on the same flash; files() reads the device's LittleFS back.

    revive_network: when the firmware's link watch reboots the chip because its network is dead, the
    chip's reset is followed by a power cycle (`revivals` counts them). On silicon that reset brings
    the radio back; the emulated Wi-Fi stays dead across it, and only QEMU started again revives
    it (docs/hil.md). What the power cycle costs the test is RTC memory and the reset cause."""

    def __init__(self, flash: Path, *, emulator: Emulator | None = None, forwards: tuple[int, ...] = (),
                 log: Path | None = None, name: str | None = None, console: type[Console] = Console,
                 board: str = "esp32-devkitc", revive_network: bool = True):
        self.flash = Path(flash).resolve()  # QEMU runs from the project's root
        self.emulator = emulator or find_emulator()
        self.forwards = tuple(forwards)
        self.log = Path(log) if log else None
        self.name = name or self.flash.stem
        self.console_type = console
        self.board = board
        self.process: Process | None = None
        self._uart: _SerialPty | None = None
        self.console: Console | None = None
        self.revive_network = revive_network
        self.revivals = 0
        self._net_reboot = False  # the link watch said it reboots; its reset is the next ROM banner
        self._power = threading.RLock()  # one start, kill or stop at a time, test's or revival's

    @property
    def port(self) -> str | None:
        return self._uart.path if self._uart else None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.process.proc if self.process else None

    def command(self) -> list[str]:
        assert self._uart is not None
        nic = "user,model=esp32_wifi,restrict=on"
        relay = ROOT / "stack" / "relay.py"
        for p in self.forwards:
            nic += f",guestfwd=tcp:{GUEST_HOST}:{p}-cmd:{sys.executable} {relay} 127.0.0.1 {p}"
        cmd = [str(self.emulator.qemu), "-nographic", "-machine", "esp32-picsimlab"]
        if self.emulator.rom_dir:
            cmd += ["-L", str(self.emulator.rom_dir)]
        return cmd + ["-drive", f"file={self.flash},if=mtd,format=raw",
                      "-serial", f"tcp:127.0.0.1:{self._uart.port}", "-display", "none", "-monitor", "none",
                      "-nic", nic]

    def start(self, wait_boot: bool = True, timeout: float = 120.0) -> EmulatedBoard:
        """Boot it; with wait_boot, until the firmware's `boot` or `fault` line (the image takes
        about half a minute of one core to load on the emulator)."""
        if self._uart is None:
            self._uart = _SerialPty(self._chip_line)
            self.console = self.console_type(self._uart.path, name=self.name)
        con = self.console
        assert con is not None
        mark = con.mark()
        with self._power:
            proc = self._boot()
        if wait_boot:
            try:
                con.wait_for(lambda m: m.get("ev") in ("boot", "fault"), timeout, since=mark)
            except Exception:
                if not proc.running:
                    raise StartError(f"{proc.name} exited: {proc.tail()}") from None
                raise
        return self

    def _boot(self) -> Process:
        self._net_reboot = False
        self.process = Process(self.command(), name=f"emulated ESP32 {self.name}", log=self.log)
        self.process.start()
        return self.process

    def _chip_line(self, raw: bytes) -> None:
        """Every line from the chip (the pty's reader thread): a network reboot's reset, revived."""
        if not self.revive_network:
            return
        if raw.startswith(b"{") and b'"net"' in raw:
            try:
                m = json.loads(raw)
            except ValueError:
                return
            if m.get("ev") == "net" and m.get("action") == "reboot":
                self._net_reboot = True
        elif self._net_reboot and raw.startswith(b"rst:"):  # the ROM's banner: the reset is under way
            self._net_reboot = False
            threading.Thread(target=self._revive, name=f"revive-{self.name}", daemon=True).start()

    def _revive(self) -> None:
        with self._power:
            if self.process is None:  # stopped meanwhile
                return
            self.process.kill()
            self.revivals += 1
            if self.log:
                with self.log.open("a") as f:
                    f.write(f"\n== power cycle {self.revivals}: the chip rebooted for its network\n")
            self._boot()

    def power_cut(self, wait_boot: bool = True, timeout: float = 120.0) -> None:
        """The power goes and comes back: QEMU is killed mid-instruction and booted on the same flash."""
        with self._power:
            if self.process:
                self.process.kill()
        self.start(wait_boot, timeout)

    def stop(self) -> None:
        with self._power:
            if self.process:
                self.process.stop()
                self.process = None
        if self.console:
            if self.log:  # the whole serial log beside QEMU's own, for a failure's post-mortem
                self.log.with_suffix(".serial.log").write_text("".join(t + "\n" for _, t in self.console.log))
            self.console.close()
            self.console = None
        if self._uart:
            self._uart.close()
            self._uart = None

    @contextlib.contextmanager
    def console_handed_over(self):
        """Leave the console port to another program (the installer's `verify`, mpremote) for the
        `with` body, as one unplugs a terminal, and open it again after; yields the port's path."""
        assert self._uart is not None and self.console is not None, "not started"
        self.console.close()
        self.console = None
        try:
            yield self._uart.path
        finally:
            self.console = self.console_type(self._uart.path, name=self.name)

    def request(self, cmd: str, timeout: float | None = None, **args):
        assert self.console is not None, "not started"
        return self.console.request(cmd, timeout=timeout, **args)

    def files(self) -> dict[str, bytes]:
        """Every file on the device's filesystem, read from the flash file."""
        from provisioning.boards import get_board
        from provisioning.image import read_image_bytes

        board = get_board(self.board)
        geo = board.filesystem
        return read_image_bytes(self.flash.read_bytes()[geo.offset:geo.offset + geo.size], board)


class DownloadMode:
    """The emulated chip held in its ROM serial loader (GPIO0 strapped low), as an installer's board
    with BOOT held: esptool talks to it at `url`. Stops, and lets go of the flash file, on exit."""

    def __init__(self, flash: Path, emulator: Emulator | None = None, log: Path | None = None):
        self.flash = Path(flash).resolve()  # QEMU runs from the project's root
        self.emulator = emulator or find_emulator()
        self.log = log
        self.process: Process | None = None
        self.url = ""

    def __enter__(self) -> DownloadMode:
        port = free_port()
        cmd = [str(self.emulator.flasher), "-nographic", "-machine", "esp32"]
        if self.emulator.rom_dir:
            cmd += ["-L", str(self.emulator.rom_dir)]
        cmd += ["-drive", f"file={self.flash},if=mtd,format=raw",
                "-global", "driver=esp32.gpio,property=strap_mode,value=0x0f",
                "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off", "-display", "none", "-monitor", "none"]
        self.process = Process(cmd, name="emulated ESP32 (ROM loader)", log=self.log)
        self.process.start()
        wait_port("127.0.0.1", port, 20)
        self.url = f"socket://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process:
            self.process.stop(timeout=20)  # SIGTERM: QEMU quits cleanly, the flash file written
            self.process = None


def provision(devices_dir: Path, dev: str, broker_port: int, out: Path, emulator: Emulator, *,
              board: str = "esp32-devkitc", tls: bool = False, ca_der: bytes | None = None,
              test_rig: bool = True, telemetry_s: int = 10, keepalive: int = 10,
              lat: float = 21.028511, lon: float = 105.804817, wdt_ms: int = EMULATED_WDT_MS,
              simulated_sensors: bool = False, net_restart_s: int = 20, net_reboot_s: int = 60,
              **overrides) -> tuple[dict, Path]:
    """A device made for the emulated ESP32 as an installer makes one (new-device, build,
    flash --merge): its config and the whole-flash image, broker at GUEST_HOST:broker_port.
    `overrides`: device.json keys set in the record before the build (a test's short timings).
    simulated_sensors: the rig's sensors stand in for the BME680, GPS and chamber the emulator lacks
    (without them each boot raises their faults).
    net_restart_s, net_reboot_s: shorter than on a real device, because the emulated Wi-Fi can stop
    delivering frames to the chip while the link still reads as up (docs/hil.md): the firmware's
    link watch restarts the interface, then reboots, and tests should not wait 15 minutes for it."""
    from provisioning.boards import get_board
    from provisioning.devices import Network, Site, create_device, device_dir, load_device
    from provisioning.flashing import merge
    from provisioning.image import build

    net = Network(broker_host=GUEST_HOST, broker_port=broker_port, tls=tls, keepalive=keepalive,
                  wifi_ssid=WIFI_SSID, telemetry_s=telemetry_s, test_rig=test_rig, ca_cert=ca_der)
    site = Site(building="Emulated ESP32", address="1 Loopback Street", lat=lat, lon=lon)
    create_device(devices_dir, dev, board, site, net)
    cfg = load_device(devices_dir, dev)
    cfg["wdt_ms"] = wdt_ms  # in the record too, so the installer's own `flash` builds the same image
    cfg["net_restart_s"], cfg["net_reboot_s"] = net_restart_s, net_reboot_s
    cfg["ntp"] = False  # the closed network has no time server (and forwards no UDP)
    if test_rig and simulated_sensors:
        cfg["rig_sensors"] = "simulated"  # no ADC, BME680 or GPS in the emulator: the rig's stand in
    cfg.update(overrides)
    record = device_dir(devices_dir, dev) / "device.json"
    record.write_text(json.dumps(cfg, indent=1, ensure_ascii=False))
    b = get_board(board)
    r = build(cfg, b, out / "build", ca_der=ca_der)
    return cfg, merge(b, r.image, emulator.require_firmware(), out / "merged.bin")

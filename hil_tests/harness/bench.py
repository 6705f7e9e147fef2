"""The bench: the boards under test, the rig around each, and the system behind them.

Virtual form (no --port): N virtual boards, each provisioned here with a fresh key and broker
password, a Mosquitto on a free loopback port, the 114 reference intake and the bridge.
Real form (--port): one board already flashed with --device-config; the suite registers that config
with its bridge, and talks to the broker the board was provisioned for (--broker).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stack.bridge import Bridge, intake_bridge_config
from stack.devices import device_config, write_device
from stack.esp32_qemu import EmulatedBoard
from stack.intake import Intake
from stack.mosquitto import Mosquitto
from stack.observer import Observer
from stack.procs import stop_all, wait_until
from stack.vboard import VirtualBoard

from .dut import Dut
from .rig import EmulatedRig, Rig, rig_for

EMULATED = "esp32-qemu"  # --board: the installer's esp32-devkitc image on the emulated ESP32
EMULATED_BOARD = "esp32-devkitc"

# Where the virtual boards stand: distinct coordinates, so each incident shows which board raised it.
SITES = [
    (21.028511, 105.804817, "Toà nhà HIL A", "12 Láng Hạ, Đống Đa, Hà Nội"),
    (10.776889, 106.700806, "Toà nhà HIL B", "139 Lý Tự Trọng, Quận 1, TP. Hồ Chí Minh"),
    (16.054407, 108.202167, "Toà nhà HIL C", "2 Bạch Đằng, Hải Châu, Đà Nẵng"),
]


# The GC heap of a virtual board, capped as the stand-in for an ESP32 without PSRAM. On the unix port
# the loaded bytecode lives in this heap too (in flash on a board with frozen modules).
VIRTUAL_HEAP = "192K"


def virtual_device(dev: str, broker_port: int, i: int) -> dict:
    lat, lon, building, address = SITES[i % len(SITES)]
    return device_config(
        dev, broker_port, lat=round(lat + i // len(SITES) * 0.001, 6), lon=lon, acc=12,
        site={"building": building, "address": address, "floor": str(i + 1), "room": "HIL",
              "contact_phone": "+84 24 0000 0114", "province": "HIL"},
        telemetry_s=2,
        hold_cancel_ms=1500,
        cancel_window_s=6,  # short, so consecutive scenarios can raise new alarms soon
        wdt_ms=3000,  # the hang scenario waits for the watchdog: keep it short on a virtual board
        sample_s=1,
        detect={"smoke": {"persist_s": 2}},
    )


@dataclass
class Board:
    """One board under test: its config, its console, its rig (and its launcher when virtual)."""

    cfg: dict
    dut: Dut
    rig: Rig
    vboard: VirtualBoard | EmulatedBoard | None = None

    @property
    def dev(self) -> str:
        return self.cfg["dev"]


@dataclass
class Bench:
    workdir: Path
    board_name: str
    board_entry: dict
    boards: list[Board] = field(default_factory=list)
    broker: Mosquitto | None = None  # only when the suite started it
    broker_addr: tuple[str, int] = ("127.0.0.1", 0)
    intake: Intake | None = None
    bridge: Bridge | None = None
    observer: Observer | None = None

    @property
    def virtual(self) -> bool:
        return self.board_entry.get("usb") == "pty"

    @property
    def emulated(self) -> bool:
        return self.board_name == EMULATED

    def start(self, *, port: str | None, count: int, broker: str | None, device_config_path: str | None) -> Bench:
        bridge_user, bridge_pw = "bridge", secrets.token_urlsafe(18)
        obs_user, obs_pw = "hil-observer", secrets.token_urlsafe(18)
        if port:
            cfgs = [json.loads(Path(device_config_path).read_text())]
        elif self.emulated:
            cfgs = []  # provisioned once the broker's port is known (it goes into the image)
            count = 1
        else:
            cfgs = [virtual_device(f"hil-v-{i + 1:02d}", 0, i) for i in range(count)]
        if broker:
            host, _, p = broker.rpartition(":")
            self.broker_addr = (host or "127.0.0.1", int(p))
            bridge_user = os.environ.get("BAOCHAY_HIL_BRIDGE_USER", bridge_user)
            bridge_pw = os.environ.get("BAOCHAY_HIL_BRIDGE_PASSWORD", "")
            obs_user = os.environ.get("BAOCHAY_HIL_OBSERVER_USER", obs_user)
            obs_pw = os.environ.get("BAOCHAY_HIL_OBSERVER_PASSWORD", "")
        else:
            users = {bridge_user: bridge_pw, obs_user: obs_pw}
            users.update({c["dev"]: c["mqtt"]["password"] for c in cfgs})
            self.broker = Mosquitto(self.workdir / "broker", users=users, bridge_users=(bridge_user,),
                                    observer_users=(obs_user,))
            self.broker.start()
            self.broker_addr = (self.broker.host, self.broker.port)
            if self.emulated:
                cfgs = [self._provision_emulated()]
            for c in cfgs:
                if not port:
                    c["mqtt"]["port"] = self.broker.port
        host, bport = self.broker_addr
        if obs_pw:
            # a persistent session: what is published while the broker is restarting still reaches it
            self.observer = Observer(host, bport, obs_user, obs_pw, persistent=True, name="hil-observer")
        self.intake = Intake(self.workdir / "intake" / "intake.db").start()
        mqtt = {"host": host, "port": bport, "user": bridge_user, "password": bridge_pw, "keepalive": 10}
        self.bridge = Bridge(self.workdir / "bridge", intake_bridge_config(
            "hil", self.workdir / "bridge" / "bridge.db", mqtt, self.intake.url, self.intake.token,
            self.intake.client, health_s=5,
            # short, so a refusing intake ends in `failed` quickly
            delivery={"max_age_s": 6.0, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "jitter": 0.2}))
        self.bridge.register(cfgs, board=EMULATED_BOARD if self.emulated else None)
        self.bridge.start()
        if port:
            self._attach_real(port, cfgs[0])
        elif self.emulated:
            self._start_emulated(cfgs[0])
        else:
            for c in cfgs:
                self._start_virtual(c)
        return self

    def _start_virtual(self, cfg: dict) -> None:
        dev = cfg["dev"]
        path = write_device(cfg, self.workdir / "devices" / dev)
        vb = VirtualBoard(self.workdir / "flash" / dev, device_config=path, log=self.workdir / f"{dev}.board.log",
                          heap=VIRTUAL_HEAP, console=Dut, name=dev)
        vb.start(wait_boot=False)
        dut = vb.console
        assert isinstance(dut, Dut)
        board = Board(cfg, dut, rig_for(self.board_entry, dut, test_rig=True, launcher_pid=lambda: vb.pid), vb)
        self.boards.append(board)
        dut.expect("boot", 60)

    def _provision_emulated(self) -> dict:
        from stack.esp32_qemu import find_emulator, provision

        assert self.broker is not None
        self.emulator = find_emulator()
        dev = "hil-q-01"
        lat, lon, _, _ = SITES[0]
        cfg, self._merged = provision(
            self.workdir / "devices", dev, self.broker.port, self.workdir / "image", self.emulator,
            lat=lat, lon=lon, simulated_sensors=True, telemetry_s=5, hold_cancel_ms=1500, cancel_window_s=6, sample_s=1,
            detect={"smoke": {"persist_s": 2}})
        self.broker.add_user(dev, cfg["mqtt"]["password"])
        self.broker.reload()
        return cfg

    def _start_emulated(self, cfg: dict) -> None:
        assert self.broker is not None
        flash = self.workdir / "flash.bin"
        flash.write_bytes(self._merged.read_bytes())
        eb = EmulatedBoard(flash, emulator=self.emulator, forwards=(self.broker.port,),
                           log=self.workdir / f"{cfg['dev']}.qemu.log", name=cfg["dev"], console=Dut,
                           board=EMULATED_BOARD)
        eb.start(wait_boot=False)
        dut = eb.console
        assert isinstance(dut, Dut)
        self.boards.append(Board(cfg, dut, EmulatedRig(dut, lambda: eb.power_cut(wait_boot=False)), eb))
        dut.expect("boot", 120)

    def _attach_real(self, port: str, cfg: dict) -> None:
        dut = Dut(port, name=cfg["dev"])
        rig = rig_for(self.board_entry, dut, test_rig=bool(cfg.get("test_rig")), broker=self.broker)
        self.boards.append(Board(cfg, dut, rig))
        # the board may have booted long ago: reset it so the run starts from a known boot
        try:
            rig.reset()
        except Exception:
            dut.cmd("status", timeout=10)

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until nothing is in flight: every board's flash outbox is empty (the bridge stored it
        all) and the bridge has nothing left to deliver. Each scenario starts from here, so what one
        left on its way (a sensor alarm's incident, a restore) never lands in another, whatever the order."""
        for b in self.boards:
            wait_until(lambda b=b: b.dut.cmd("outbox")["ids"] == [], timeout, 0.2, what=f"{b.dev}: outbox empty")
        if self.bridge:
            bridge = self.bridge
            wait_until(lambda: not any(s["backlog"] for s in bridge.status()["sinks"]), timeout, 0.2,
                       what="bridge: nothing left to deliver")

    def stop(self) -> None:
        for b in self.boards:
            b.dut.close()
        if self.observer:
            self.observer.close()
        stop_all(*(b.vboard for b in self.boards), self.bridge, self.intake, self.broker)

    def save_logs(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for b in self.boards:
            (directory / f"serial-{b.dev}.log").write_text(b.dut.log_text())

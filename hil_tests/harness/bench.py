"""The bench: the boards under test, the rig around each, and the system behind them.

Virtual form (no --port): N virtual boards, each provisioned here with a fresh key and broker
password, a Mosquitto on a free loopback port, the 114 reference intake and the bridge.
Real form (--port): one board already flashed with --device-config; the suite registers that config
with its bridge, and talks to the broker the board was provisioned for (--broker).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from firmware.protocol import PREFIX
from stack.devices import device_config, write_device
from stack.mosquitto import Mosquitto

from .dut import Dut, open_serial
from .rig import Rig, rig_for
from .system import Bridge, Intake, VirtualBoardProc, new_secret

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
    vboard: VirtualBoardProc | None = None

    @property
    def dev(self) -> str:
        return self.cfg["dev"]


class Observer:
    """Reads every device topic from the broker (retained status births included), with arrival times."""

    _ids = itertools.count(1)

    def __init__(self, host: str, port: int, user: str, password: str):
        self.creds = (host, port, user, password)
        self.msgs: list[tuple[float, str, bytes, bool]] = []
        self.cond = threading.Condition()
        # a persistent session: what is published while the broker is restarting still reaches us
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hil-observer-{os.getpid()}-{next(self._ids)}",
                             clean_session=False)
        self.c.reconnect_delay_set(1, 2)
        self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(PREFIX + "#", 1)
        self.c.connect_async(host, port, keepalive=10)
        self.c.loop_start()

    def _on_message(self, c, u, m) -> None:
        with self.cond:
            self.msgs.append((time.monotonic(), m.topic, m.payload, bool(m.retain)))
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 20.0, since: int = 0):
        end = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.msgs):
                    if pred(self.msgs[i]):
                        return self.msgs[i]
                    i += 1
                left = end - time.monotonic()
                if left <= 0:
                    seen = [(t, p[:100]) for _, t, p, _ in self.msgs[-15:]]
                    raise AssertionError(f"no matching MQTT message within {timeout:.0f} s; last seen: {seen}")
                self.cond.wait(left)

    def mark(self) -> int:
        with self.cond:
            return len(self.msgs)

    def bodies(self, topic: str, since: int = 0) -> list[dict]:
        """The JSON bodies seen on one topic (the body line of signed frames)."""
        with self.cond:
            return [json.loads(p.split(b"\n", 1)[0]) for _, t, p, _ in self.msgs[since:] if t == topic]

    def another(self) -> Observer:
        """A second, independent subscriber (e.g. to see what a late subscriber gets)."""
        return Observer(*self.creds)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


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

    def start(self, *, port: str | None, count: int, broker: str | None, device_config_path: str | None) -> Bench:
        bridge_user, bridge_pw = "bridge", new_secret()
        obs_user, obs_pw = "hil-observer", new_secret()
        if port:
            cfgs = [json.loads(Path(device_config_path).read_text())]
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
            for c in cfgs:
                if not port:
                    c["mqtt"]["port"] = self.broker.port
        host, bport = self.broker_addr
        if obs_pw:
            self.observer = Observer(host, bport, obs_user, obs_pw)
        self.intake = Intake(self.workdir / "intake").start()
        self.bridge = Bridge(self.workdir / "bridge", host, bport, bridge_user, bridge_pw, self.intake.url)
        self.bridge.register(cfgs)
        self.bridge.start()
        if port:
            self._attach_real(port, cfgs[0])
        else:
            for c in cfgs:
                self._start_virtual(c)
        return self

    def _start_virtual(self, cfg: dict) -> None:
        dev = cfg["dev"]
        path = write_device(cfg, self.workdir / "devices" / dev)
        vb = VirtualBoardProc(self.workdir / "flash" / dev, path, self.workdir / f"{dev}.board.log", heap=VIRTUAL_HEAP)
        port = vb.start()
        dut = Dut(open_serial(port), name=dev)
        board = Board(cfg, dut, rig_for(self.board_entry, dut, test_rig=True, launcher_pid=lambda: vb.pid), vb)
        self.boards.append(board)
        dut.expect("boot", 60)

    def _attach_real(self, port: str, cfg: dict) -> None:
        dut = Dut(open_serial(port), name=cfg["dev"])
        rig = rig_for(self.board_entry, dut, test_rig=bool(cfg.get("test_rig")), broker=self.broker)
        self.boards.append(Board(cfg, dut, rig))
        # the board may have booted long ago: reset it so the run starts from a known boot
        try:
            rig.reset()
        except Exception:
            dut.cmd("status", timeout=10)

    def stop(self) -> None:
        for b in self.boards:
            b.dut.close()
            if b.vboard:
                b.vboard.stop()
        if self.observer:
            self.observer.close()
        if self.bridge:
            self.bridge.stop()
        if self.intake:
            self.intake.stop()
        if self.broker:
            self.broker.stop()

    def save_logs(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for b in self.boards:
            (directory / f"serial-{b.dev}.log").write_text(b.dut.log_text())

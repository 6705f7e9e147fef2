"""baochay-stack: the whole system on this computer, for a demonstration or a try-out.

    baochay-stack              broker, 114 reference intake, reference SMSC, bridge and four virtual
                               boards (three call points, one panel transmitter); type a board's
                               number (or id) and Enter to press its button
    baochay-stack press ID     press a running board's button from another terminal
    baochay-stack panel ID --input fire --state active
                               set a transmitter's input line as the building's panel would

Everything listens on loopback only. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from firmware import protocol_host as protocol

from .bridge import Bridge, intake_bridge_config
from .console import Console, ConsoleError
from .devices import device_config, write_device
from .intake import Intake
from .mosquitto import Mosquitto, MosquittoMissing
from .procs import StartError, stop_all
from .smsc import Smsc
from .tls import LoopbackPKI
from .vboard import VirtualBoard

ROOT = Path(__file__).resolve().parent.parent
STATE = "state.json"

# Sites far apart, so the intake page shows the location at a glance; the last is a transmitter on
# a building's fire alarm panel (docs/transmitter.md), whose inputs `panel` sets.
SITES: list[dict[str, Any]] = [
    {"dev": "hn-tower-a-01", "lat": 21.028511, "lon": 105.804817, "acc": 10,
     "site": {"building": "Tòa nhà Sông Hồng, tháp A", "address": "23 Phan Chu Trinh, Phường Cửa Nam, Thành phố Hà Nội",
              "floor": "12", "room": "1203", "contact_phone": "+84 24 3825 0000", "province": "Thành phố Hà Nội"},
     "facility": ["--type", "apartment", "--floors-above", "25", "--floors-below", "3", "--occupancy-day", "600",
                  "--occupancy-night", "1400", "--hazard", "gas", "--water", "Trụ nước trước cổng, 15 m",
                  "--contact", "Ban quản lý=+84 24 3825 0000", "--contact", "Bảo vệ=0901000001",
                  "--contact", "Trưởng ban=0901000002"]},
    {"dev": "ld-market-01", "lat": 12.004470, "lon": 107.690710, "acc": 15,  # Đắk Nông is part of Lâm Đồng
     "site": {"building": "Chợ Gia Nghĩa", "address": "Đường Lê Duẩn, Phường Bắc Gia Nghĩa, Tỉnh Lâm Đồng",
              "floor": "1", "room": "Khu B", "contact_phone": "+84 261 3544 000", "province": "Tỉnh Lâm Đồng"},
     "facility": ["--type", "market", "--floors-above", "2", "--floors-below", "0", "--occupancy-day", "2000",
                  "--occupancy-night", "20", "--hazard", "gas", "--hazard", "fuel",
                  "--water", "Hồ Gia Nghĩa, 400 m", "--contact", "Ban quản lý chợ=+84 261 3544 000",
                  "--contact", "Bảo vệ=0902000001", "--contact", "Phó ban=0902000002"]},
    {"dev": "hcm-school-01", "lat": 10.776889, "lon": 106.700806, "acc": 12,
     "site": {"building": "Trường THCS Nguyễn Du", "address": "139 Lý Tự Trọng, Phường Bến Thành, Thành phố Hồ Chí Minh",
              "floor": "3", "room": "Phòng 305", "contact_phone": "+84 28 3822 0000",
              "province": "Thành phố Hồ Chí Minh"},
     "facility": ["--type", "school", "--floors-above", "4", "--floors-below", "0", "--occupancy-day", "1200",
                  "--occupancy-night", "5", "--hazard", "none", "--water", "Trụ nước đường Lý Tự Trọng, 30 m",
                  "--contact", "Văn phòng trường=+84 28 3822 0000", "--contact", "Hiệu trưởng=0903000001",
                  "--contact", "Bảo vệ=0903000002"]},
    {"dev": "dn-hotel-01", "lat": 16.061280, "lon": 108.247420, "acc": 10, "board": "virtual-transmitter",
     "site": {"building": "Khách sạn Biển Xanh", "address": "12 Võ Nguyên Giáp, Phường An Hải, Thành phố Đà Nẵng",
              "floor": "B1", "room": "Phòng kỹ thuật (tủ báo cháy)", "contact_phone": "+84 236 3940 000",
              "province": "Thành phố Đà Nẵng"},
     "facility": ["--type", "hotel", "--floors-above", "15", "--floors-below", "1", "--occupancy-day", "300",
                  "--occupancy-night", "450", "--hazard", "gas", "--water", "Bể nước chữa cháy tầng hầm, 300 m³",
                  "--contact", "Lễ tân=+84 236 3940 000", "--contact", "Kỹ thuật trực=0905000001",
                  "--contact", "Quản lý=0905000002"]},
]


def demo_site(s: dict[str, Any]) -> dict[str, Any]:
    """One of SITES as Stack.up() takes it: a fresh device config (key, passwords), its facility, its board."""
    extra = {"board": s["board"]} if s.get("board") else {}
    return {"cfg": device_config(s["dev"], 0, lat=s["lat"], lon=s["lon"], acc=s["acc"], site=s["site"],
                                 telemetry_s=5, **extra), "facility": s.get("facility"), "board": s.get("board")}


def say(msg: str) -> None:
    print(msg, flush=True)


class Stack:
    def __init__(self, workdir: Path, count: int, keep_consoles: bool = False, heap: str | None = None,
                 board: str = "virtual", bridge_extra: dict[str, Any] | None = None):
        self.heap = heap
        self.bridge_extra = bridge_extra or {}  # sections of the bridge's config on top of the demo's
        self.board = board  # which virtual entry of boards.yaml every board runs
        self.dir = workdir
        self.count = count
        self.keep_consoles = keep_consoles
        self.boards: list[VirtualBoard] = []
        self.broker: Mosquitto | None = None
        self.intake: Intake | None = None
        self.smsc: Smsc | None = None
        self.bridge: Bridge | None = None
        self.watcher: mqtt.Client | None = None

    # -- pieces --------------------------------------------------------------------------------
    def start_broker(self, pki: LoopbackPKI | None = None) -> None:
        """With `pki`, a TLS listener beside the plain one (devices on TLS, services on loopback)."""
        self.bridge_pw = secrets.token_urlsafe(18)
        self.watch_pw = secrets.token_urlsafe(18)
        self.broker = Mosquitto(self.dir / "broker", users={"bridge": self.bridge_pw, "watcher": self.watch_pw},
                                bridge_users=("bridge",), observer_users=("watcher",),
                                tls_cert=pki.server_cert if pki else None, tls_key=pki.server_key if pki else None,
                                tls_ca=pki.ca_cert if pki else None)
        for s in self.sites:
            self.broker.users[s["cfg"]["dev"]] = s["cfg"]["mqtt"]["password"]
        self.broker.write_config()
        self.broker.start()
        say(f"  broker     mqtt://127.0.0.1:{self.broker.port}  (Mosquitto, per-device passwords and ACL)")
        if pki:
            say(f"  broker     mqtts://127.0.0.1:{self.broker.tls_port}  (TLS, certificate from {pki.ca_cert.name})")

    def start_intake(self) -> None:
        # One client, the bridge, with a token made for this run: in the intake's 0600 tokens file and
        # the bridge's 0600 config, never printed.
        self.intake = Intake(self.dir / "intake.db").start()
        self.intake_url = self.intake.url
        say(f"  114 intake {self.intake_url}/  (reference server: open it in a browser to watch incidents)")

    def start_smsc(self) -> None:
        """The reference SMSC: the SMS the facilities' contacts would get (docs/operator-guide.md)."""
        self.smsc = Smsc(self.dir / "smsc").start()
        say(f"  SMSC       smpp://127.0.0.1:{self.smsc.port}  (reference SMSC: the contacts' SMS at "
            f"http://127.0.0.1:{self.smsc.control_port}/messages)")

    def _intake(self) -> Intake:  # started by up(); a clear error before that
        if self.intake is None:
            raise RuntimeError("the intake is not started")
        return self.intake

    def _broker(self) -> Mosquitto:  # started by up(); a clear error before that
        if self.broker is None:
            raise RuntimeError("the broker is not started")
        return self.broker

    def start_bridge(self) -> None:
        mqtt = {"host": "127.0.0.1", "port": self._broker().port, "user": "bridge", "password": self.bridge_pw}
        intake = self._intake()
        extra = dict(self.bridge_extra)
        if self.smsc is not None:  # contacts told by SMS, the next one after a minute without an answer
            extra["notify"] = {"type": "smpp", "ack_s": 60, **extra.get("notify", {}),
                               "options": self.smsc.notify_options()}
        self.bridge = Bridge(self.dir, intake_bridge_config("local", self.dir / "bridge.db", mqtt, self.intake_url,
                                                            intake.token, intake.client, **extra))
        for s in self.sites:
            self.bridge.register([s["cfg"]], board=self._board_of(s))
        for s in self.sites:  # the facility record 114 receives with each alarm (docs/operator-guide.md)
            if s.get("facility"):
                r = self.bridge.cli("facilities", "set", s["cfg"]["site"]["building"], *s["facility"])
                if r.returncode:
                    raise StartError(f"facility of {s['cfg']['dev']}: {r.stderr.strip()}")
        self.bridge.start()
        self.bridge_conf = self.bridge.cfg_path
        say(f"  bridge     config {self.bridge_conf.relative_to(ROOT) if self.bridge_conf.is_relative_to(ROOT) else self.bridge_conf}")

    def start_boards(self) -> None:
        for i, s in enumerate(self.sites, 1):
            cfg = s["cfg"]
            path = write_device(cfg, self.dir / "devices" / cfg["dev"])
            vb = VirtualBoard(self.dir / "flash" / cfg["dev"], device_config=path, heap=self.heap,
                              log=self.dir / f"{cfg['dev']}.log", board=self._board_of(s))
            vb.start()
            if not self.keep_consoles and vb.console is not None:
                vb.console.close()  # leave the port free for `make press` and serial tools
                vb.console = None
            s["port"] = vb.port
            self.boards.append(vb)
            say(f"  board {i}    {cfg['dev']:<15} console {vb.port}  {cfg['site']['address']}")

    def _board_of(self, site: dict) -> str:
        """The boards.yaml entry a site's board runs: its own (the transmitter), else the stack's."""
        return site.get("board") or self.board

    def watch(self) -> None:
        """Print each alarm's progress as the bridge acks it."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="stack-watcher")
        c.username_pw_set("watcher", self.watch_pw)

        def on_message(client, userdata, m):
            try:
                dev, kind = protocol.split_topic(m.topic, ("event", "ack"))
                body = json.loads(m.payload.split(b"\n", 1)[0])
            except (protocol.Refused, ValueError):
                return
            t = time.strftime("%H:%M:%S")
            if kind == "event":
                say(f"{t}  {dev}: {body.get('type')} ({body.get('cause')}) {body.get('id')} sent")
            else:
                extra = body.get("incident") or body.get("reason") or ""
                say(f"{t}  {dev}: {body.get('id')} {body.get('stage')} {extra}")

        c.on_message = on_message
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(protocol.every("event"), 1),
                                                                  (protocol.every("ack"), 1)])
        c.connect("127.0.0.1", self._broker().port)
        c.loop_start()
        self.watcher = c

    # -- the whole -----------------------------------------------------------------------------
    def up(self, sites: list[dict] | None = None, watch: bool = True, smsc: bool = True) -> None:
        """Start everything; `sites` (entries {"cfg": device config}) replace the demo sites."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        if sites is None:
            sites = [demo_site(s) for s in SITES[: self.count]]
        self.sites = sites
        say("Starting Báo cháy 114 Edge locally (loopback only):")
        self.start_broker()
        for s in self.sites:
            s["cfg"]["mqtt"]["port"] = self._broker().port
        self.start_intake()
        if smsc:
            self.start_smsc()
        self.start_bridge()
        self.start_boards()
        if watch:
            self.watch()
        (self.dir / STATE).write_text(json.dumps({"boards": {s["cfg"]["dev"]: s["port"] for s in self.sites},
                                                  "kinds": {s["cfg"]["dev"]: self._board_of(s) for s in self.sites},
                                                  "intake": self.intake_url, "bridge_config": str(self.bridge_conf),
                                                  "pid": os.getpid()}))

    def watcher_options(self) -> Path:
        """mosquitto_sub's options file for the read-only watcher, 0600, in a folder of its own: with
        XDG_CONFIG_HOME pointing there, mosquitto_sub logs in without a password on its command line."""
        folder = self.dir / "watcher"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / "mosquitto_sub"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"-h 127.0.0.1\n-p {self._broker().port}\n-u watcher\n-P {self.watch_pw}\n")
        return folder

    def down(self) -> None:
        (self.dir / STATE).unlink(missing_ok=True)  # `make press` must not find a stopped system
        if self.watcher:
            self.watcher.loop_stop()
        stop_all(*self.boards, self.bridge, self.smsc, self.intake, self.broker)


def _shown(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _running(pid) -> bool:
    try:
        os.kill(int(pid), 0)  # signal 0: is it there (and ours)?
        return True
    except (OSError, ValueError, TypeError):
        return False


def _running_board(workdir: Path, dev: str) -> tuple[dict, str, Console] | int:
    """(the run's state, the device id, its console), or the exit code after saying what is wrong."""
    try:
        state = json.loads((workdir / STATE).read_text())
    except (OSError, ValueError):
        state = None
    if not state or not _running(state.get("pid")):  # a run killed before it could tidy up leaves one
        say("error: no running system; start it first with `make run` (and keep it running)")
        return 2
    boards = state["boards"]
    if dev.isdigit() and 1 <= int(dev) <= len(boards):
        dev = list(boards)[int(dev) - 1]
    if dev not in boards:
        say(f"error: unknown device {dev!r}; running: {', '.join(boards)}")
        return 2
    try:
        return state, dev, Console(boards[dev], timeout=5)
    except ConsoleError as e:
        say(f"error: {e}")
        return 1


def press(workdir: Path, dev: str, ms: int = 200) -> int:
    """Press a running board's button for `ms` (a hold of hold_cancel_ms or more cancels its alarm)."""
    found = _running_board(workdir, dev)
    if isinstance(found, int):
        return found
    state, dev, con = found
    try:
        mark = con.mark()
        con.request("press", ms=ms)
        con.wait_for(lambda m: m.get("ev") == "event", 5, since=mark)
        # the alarm leaves at the press; a long enough hold then cancels it: report what the hold did
        con.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 5 + ms / 1000, since=mark)
        time.sleep(0.2)
        done = [f"{e.get('type')} {e.get('id')}" for e in con.find("event", since=mark)]
        say(f"pressed {dev} for {ms / 1000:g} s: {', then '.join(done)}; watch it at {state['intake']}/")
        return 0
    except ConsoleError as e:
        say(f"error: {dev} did not answer: {e}")
        return 1
    finally:
        con.close()


PANEL_STATES = ("normal", "active", "open", "short")


def panel(workdir: Path, dev: str, input_name: str, line: str) -> int:
    """Put a running transmitter's input line in `line` (normal, active, open, short), as the building's
    panel (its relay) or its wiring would, and say what the device raised once it confirmed it."""
    found = _running_board(workdir, dev)
    if isinstance(found, int):
        return found
    state, dev, con = found
    try:
        before = con.request("status").get("panel")
        if not before:
            panels = [d for d, kind in state.get("kinds", {}).items() if kind == "virtual-transmitter"]
            say(f"error: {dev} has no panel inputs; running transmitters: {', '.join(panels) or 'none'}")
            return 2
        if input_name not in before["inputs"]:
            say(f"error: {dev} has no input {input_name!r}; its inputs: {', '.join(before['inputs'])}")
            return 2
        mark = con.mark()
        con.request("panel", input=input_name, state=line)
        if before["inputs"][input_name] == line:
            say(f"{dev}: input {input_name} is already {line}; nothing to send")
            return 0
        ev = con.wait_for(lambda m: m.get("ev") == "event", 15, since=mark)
        say(f"{dev}: input {input_name} {line}: {ev.get('type')} ({ev.get('cause')}) {ev.get('id')}; "
            f"watch it at {state['intake']}/")
        return 0
    except ConsoleError as e:
        say(f"error: {dev} did not answer: {e}")
        return 1
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baochay-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=ROOT / "var" / "stack", help="where the run keeps its files")
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("up", help="start everything (the default)")
    p = sub.add_parser("press", help="press a running board's button")
    p.add_argument("device", help="device id, or its number in the list")
    p.add_argument("--ms", type=int, default=200, help="how long the button is held (default 200 ms)")
    p.add_argument("--hold", type=float, help="hold it this many seconds instead (3.5: a long hold cancels)")
    p = sub.add_parser("panel", help="set a running transmitter's input line, as the building's panel would")
    p.add_argument("device", help="device id, or its number in the list")
    p.add_argument("--input", default="fire", help="which input (default fire; a transmitter also has fault)")
    p.add_argument("--state", required=True, choices=PANEL_STATES,
                   help="active: the panel's relay closed; normal; open or short: the wiring cut or shorted")
    ap.add_argument("--boards", type=int, default=len(SITES), choices=range(1, len(SITES) + 1))
    args = ap.parse_args(argv)
    if args.cmd == "press":
        return press(args.workdir, args.device, int(args.hold * 1000) if args.hold else args.ms)
    if args.cmd == "panel":
        return panel(args.workdir, args.device, args.input, args.state)
    stack = Stack(args.workdir, args.boards)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.up()
    except (MosquittoMissing, StartError) as e:
        say(f"error: {e}")
        stack.down()
        return 1
    except (SystemExit, Exception):
        stack.down()
        raise
    boards = [s["cfg"]["dev"] for s in stack.sites]
    say("")
    say("Ready. To press a button:")
    say(f"  type its number (1-{len(boards)}) and Enter here, or run `make press DEVICE={boards[0]}` in another terminal")
    panels = [s["cfg"]["dev"] for s in stack.sites if s.get("board") == "virtual-transmitter"]
    if panels:
        say(f"The building's fire alarm panel in alarm (its fire relay closes): `make panel DEVICE={panels[0]} "
            "STATE=active`, then STATE=normal; STATE=open cuts the line (a wiring fault)")
    if stack.smsc is not None:
        say(f"The contacts' SMS: http://127.0.0.1:{stack.smsc.control_port}/messages")
    say(f"Watch: the intake page {stack.intake_url}/ , and `.venv/bin/baochay-bridge status --config {stack.bridge_conf}`")
    watcher = stack.watcher_options()
    say(f"Raw signed frames: XDG_CONFIG_HOME={_shown(watcher)} mosquitto_sub -t '{protocol.ALL}' -v")
    say(f"  (the read-only watcher's login is in {_shown(watcher / 'mosquitto_sub')}, mode 0600: no password "
        "is printed or put on a command line)")
    say("Ctrl-C stops everything.\n")
    try:
        while True:
            line = sys.stdin.readline() if sys.stdin and sys.stdin.isatty() else None
            if line is None or line == "":
                time.sleep(3600 if line is None else 0.5)
                continue
            choice = line.strip()
            if choice:
                press(args.workdir, choice)
    except KeyboardInterrupt:
        say("\nstopping…")
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())

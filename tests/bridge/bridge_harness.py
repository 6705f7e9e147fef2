"""Helpers for the bridge tests: a fleet of simulated devices (tests/support/simdevice.py) and the
bridge under test, started through the harness (stack/bridge.py)."""

from __future__ import annotations

import secrets
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fakesink_http import FakeIntake  # noqa: E402
from support.simdevice import SimDevice  # noqa: E402

from bridge.registry import Registry  # noqa: E402
from stack.bridge import Bridge, bridge_config  # noqa: E402
from stack.mosquitto import Mosquitto  # noqa: E402
from stack.procs import wait_until  # noqa: E402


class Fleet:
    """Credentials of the simulated devices: id -> (password, key hex)."""

    def __init__(self, n: int, prefix: str = "hn-t"):
        self.devices = {f"{prefix}-{i:04d}": (secrets.token_hex(8), secrets.token_hex(32)) for i in range(1, n + 1)}
        self.sims: list = []

    def users(self) -> dict[str, str]:
        return {d: pw for d, (pw, _k) in self.devices.items()}

    def register(self, db_path: Path, building: str = "Toa nha A", **extra) -> None:
        reg = Registry(db_path)
        for i, (dev, (_pw, key)) in enumerate(self.devices.items()):
            reg.upsert({"id": dev, "key": key, "board": "sim", "building": building, "address": "1 Trang Tien, Ha Noi",
                        "floor": str(i % 5 + 1), "room": f"{100 + i}", "lat": 21.0245, "lon": 105.8412, "acc": 10,
                        "contact_phone": "+84 24 0000 0000", "province": "Ha Noi", **extra})
        reg.close()

    def sim(self, dev: str, broker: Mosquitto, **kw) -> SimDevice:
        pw, key = self.devices[dev]
        sim = SimDevice(dev, key, broker.host, broker.port, pw, **kw)
        self.sims.append(sim)
        return sim

    def close(self) -> None:
        """Close every simulated device's connection, so none is left for interpreter exit."""
        for sim in self.sims:
            try:
                sim.close()
            except Exception:
                pass
        self.sims.clear()


def bridge_for(workdir: Path, broker: Mosquitto, intake: FakeIntake, **overrides) -> Bridge:
    """The bridge under test (stack/bridge.py), delivering to the fake intake; `overrides` update the
    config's sections (see bridge_config)."""
    base = {
        "bridge_id": "test",
        "db": str(workdir / "bridge.db"),
        "mqtt": {"host": broker.host, "port": broker.port, "user": "bridge", "password": "bridge-pw",
                 "keepalive": 10},
        "sinks": [{"name": "intake", "type": "test-http", "url": intake.url, "timeout": 2}],
        "sink_types": {"test-http": "fakesink_http:HttpTestSink"},
        "accepted_from": "intake",
        "delivery": {"max_age_s": 100, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "jitter": 0.2},
        "supervision": {"mains_s": 20, "battery_s": 90000, "check_s": 0.5, "low_battery_pct": 20},
        "health_s": 2,
    }
    return Bridge(workdir, bridge_config(base, **overrides), extra_path=[HERE])  # HERE: fakesink_http


def metric(port: int, name: str) -> float:
    """A bridge's metric from its /metrics page, summed over its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + " ")
               or ln.startswith(name + "{"))


def wait_for(pred, timeout: float = 10.0, step: float = 0.05):
    """The harness's wait_until, with these tests' default timeout."""
    return wait_until(pred, timeout, step)

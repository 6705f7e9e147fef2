"""Helpers for the bridge tests: a fleet of simulated devices, the bridge as a subprocess, waits."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fakesink_http import FakeIntake  # noqa: E402

from bridge.registry import Registry  # noqa: E402
from stack.mosquitto import Mosquitto  # noqa: E402
from stack.procs import stop_process, wait_until  # noqa: E402


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

    def sim(self, dev: str, broker: Mosquitto, **kw):
        from bench.loadgen import SimDevice

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


class BridgeProc:
    def __init__(self, workdir: Path, broker: Mosquitto, intake: FakeIntake, **overrides):
        self.workdir = workdir
        self.db = workdir / "bridge.db"
        self.cfg_path = workdir / "bridge.yaml"
        self.log_path = workdir / "bridge.log"
        cfg = {
            "bridge_id": "test",
            "db": str(self.db),
            "mqtt": {"host": broker.host, "port": broker.port, "user": "bridge", "password": "bridge-pw",
                     "keepalive": 10},
            "sinks": [{"name": "intake", "type": "test-http", "url": intake.url, "timeout": 2}],
            "sink_types": {"test-http": "fakesink_http:HttpTestSink"},
            "accepted_from": "intake",
            "delivery": {"max_age_s": 100, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "jitter": 0.2},
            "supervision": {"mains_s": 20, "battery_s": 90000, "check_s": 0.5, "low_battery_pct": 20},
            "health_s": 2,
        }
        for k, v in overrides.items():
            if isinstance(v, dict):
                cfg.setdefault(k, {}).update(v)
            else:
                cfg[k] = v
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE)])
        return env

    def start(self, timeout: float = 20.0) -> BridgeProc:
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(self.cfg_path)],
                                     cwd=REPO, env=self.env(), stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(start_at)
                if b"bridge ready" in f.read():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError("bridge exited:\n" + self.log_path.read_text()[-3000:])
            time.sleep(0.05)
        raise TimeoutError("bridge not ready:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> int | None:
        """SIGTERM (a graceful shutdown) and its exit code; None when it had to be killed."""
        p, self.proc = self.proc, None
        return stop_process(p, 15)

    def kill(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--config", str(self.cfg_path)],
                              cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=30)


def wait_for(pred, timeout: float = 10.0, step: float = 0.05):
    return wait_until(pred, timeout, step)

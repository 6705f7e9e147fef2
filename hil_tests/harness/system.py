"""The system behind the board, started as real processes on loopback: Mosquitto, the 114 reference
intake, the bridge; and virtual boards (the `baochay-vboard` launcher) when no serial port is given.

Every process started here is stopped by its own handle (pid), never by name.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from stack.procs import stop_process

ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def wait_in_file(path: Path, text: bytes, proc: subprocess.Popen, timeout: float, start_at: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            f.seek(start_at)
            if text in f.read():
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[2] if len(proc.args) > 2 else proc.args} exited:\n"
                               + path.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    raise TimeoutError(f"no {text.decode()!r} within {timeout:.0f} s; see {path}")


class Intake:
    """The 114 reference intake (`python -m intake.server`) on a free loopback port."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.db = self.workdir / "intake.db"
        self.log_path = self.workdir / "intake.log"
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> Intake:
        self.workdir.mkdir(parents=True, exist_ok=True)
        err = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "intake.server", "--host", "127.0.0.1", "--port", "0",
                                      "--db", str(self.db), "--quiet"], cwd=ROOT, env=child_env(),
                                     stdout=subprocess.PIPE, stderr=err)
        got: list[str] = []
        ready = threading.Event()

        def first_line() -> None:
            got.append(self.proc.stdout.readline().decode(errors="replace"))
            ready.set()
            for _ in self.proc.stdout:  # keep the pipe drained
                pass

        threading.Thread(target=first_line, daemon=True).start()
        if not ready.wait(timeout) or "listening on" not in got[0]:
            self.stop()
            raise RuntimeError(f"intake did not start: {got[:1]}; see {self.log_path}")
        self.url = got[0].split("listening on", 1)[1].strip().rstrip("/")
        return self

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def set_mode(self, mode: str) -> None:
        """normal / fail / stall / slow / drop (docs/intake-api.md section 7)."""
        self._call("POST", "/admin/mode", {"mode": mode})

    def incidents(self, limit: int = 1000) -> list[dict]:
        return self._call("GET", f"/v1/incidents?limit={limit}")["incidents"]

    def incident(self, incident_id: str) -> dict:
        return self._call("GET", f"/v1/incidents/{incident_id}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class Bridge:
    """The bridge (`python -m bridge.cli run`) with one sink: the intake, whose acceptance the device
    sees as its `accepted` stage. `max_age_s` is short so a refusing intake ends in `failed` quickly."""

    def __init__(self, workdir: Path, broker_host: str, broker_port: int, user: str, password: str,
                 intake_url: str, max_age_s: float = 6.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = self.workdir / "bridge.db"
        self.cfg_path = self.workdir / "bridge.yaml"
        self.log_path = self.workdir / "bridge.log"
        cfg = {
            "bridge_id": "hil",
            "db": str(self.db),
            "mqtt": {"host": broker_host, "port": broker_port, "user": user, "password": password, "keepalive": 10},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "sinks": [{"name": "intake114", "type": "intake-json", "url": intake_url}],
            "accepted_from": "intake114",
            "delivery": {"max_age_s": max_age_s, "backoff_initial_s": 0.2, "backoff_max_s": 1.0, "jitter": 0.2},
            "health_s": 5,
        }
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.cfg_path.chmod(0o600)
        self.proc: subprocess.Popen | None = None

    def register(self, devices: list[dict]) -> None:
        """Put each device (its config dict) in the bridge registry, with its site and coordinates."""
        from bridge.registry import Registry

        reg = Registry(self.db)
        try:
            for cfg in devices:
                loc, site = cfg["loc"], cfg.get("site") or {}
                reg.upsert({"id": cfg["dev"], "key": cfg["key"], "board": cfg.get("board", ""), "lat": loc["lat"],
                            "lon": loc["lon"], "acc": loc.get("acc", 15), "supervision": "mains",
                            **{k: v for k, v in site.items() if k in ("building", "address", "floor", "room",
                                                                       "contact_phone", "province")}})
        finally:
            reg.close()

    def start(self, timeout: float = 30.0) -> Bridge:
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(self.cfg_path)],
                                     cwd=ROOT, env=child_env(), stdout=log, stderr=log)
        try:
            wait_in_file(self.log_path, b"bridge ready", self.proc, timeout, start_at)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, 15)
        self.proc = None


class VirtualBoardProc:
    """One `baochay-vboard` launcher: the firmware on MicroPython's unix port, its console on a pty.
    The flash directory persists across restarts, as a board's flash does."""

    def __init__(self, flash: Path, device_config: Path, log: Path, heap: str | None = None):
        self.flash = Path(flash)
        self.device_config = Path(device_config)
        self.log = Path(log)
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.port = ""

    def start(self, timeout: float = 30.0) -> str:
        cmd = [sys.executable, "-m", "provisioning.vboard", "--flash", str(self.flash),
               "--device-config", str(self.device_config), "--log", str(self.log)]
        if self.heap:
            cmd += ["--heap", self.heap]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                                     stderr=open(self.log.with_suffix(".stderr"), "ab"))
        got: list[bytes] = []
        ready = threading.Event()

        def first_line() -> None:
            got.append(self.proc.stdout.readline())
            ready.set()

        threading.Thread(target=first_line, daemon=True).start()
        line = got[0].decode().strip() if ready.wait(timeout) else ""
        if not line.startswith("console="):
            self.stop()
            raise RuntimeError(f"virtual board did not start ({line!r}); see {self.log.with_suffix('.stderr')}")
        self.port = line.split("=", 1)[1]
        return self.port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def new_secret() -> str:
    return secrets.token_urlsafe(18)

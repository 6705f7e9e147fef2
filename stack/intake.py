"""The 114 reference intake (`python -m intake.server`) as a real process on a loopback port, for
`make run`, the HIL suite and the tests alike: the server picks its port and says it in its first
line (`listening on http://HOST:PORT`); a token, TLS or a fault mode are extra arguments."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .procs import Process


class Intake:
    def __init__(self, db: Path, *, token: str | None = None, args: Sequence[str] = (), log: Path | None = None,
                 port: int = 0):
        """db: its SQLite file; token: the bearer token it requires (None: open); log: its output
        (default: beside the database); port: 0 lets the server pick a free one."""
        self.db = Path(db)
        self.token = token
        self.log_path = Path(log) if log else self.db.with_suffix(".log")
        cmd = [sys.executable, "-m", "intake.server", "--host", "127.0.0.1", "--port", str(port), "--db",
               str(self.db), "--quiet", *args]
        if token:
            cmd += ["--token", token]
        self.process = Process(cmd, name="intake", log=self.log_path, ready="listening on ")
        self.url = ""
        self.scheme = "http"
        self.port = 0

    @property
    def proc(self):
        return self.process.proc

    def start(self, timeout: float = 30.0) -> Intake:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        line = self.process.start(timeout)
        self.url = line.split("listening on ", 1)[1].strip().rstrip("/")
        self.scheme = self.url.split("://", 1)[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.process.stop(timeout)

    def __enter__(self) -> Intake:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test or the HIL suite asks of it ---------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def set_mode(self, mode: str, delay_s: float | None = None) -> None:
        """normal / fail / stall / slow / drop (docs/intake-api.md section 7); `delay_s` for slow."""
        self._call("POST", "/admin/mode", {"mode": mode} if delay_s is None else {"mode": mode, "delay_s": delay_s})

    def incidents(self, limit: int = 1000) -> list[dict]:
        return self._call("GET", f"/v1/incidents?limit={limit}")["incidents"]

    def incident(self, incident_id: str) -> dict:
        return self._call("GET", f"/v1/incidents/{incident_id}")

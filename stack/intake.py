"""The 114 reference intake (`python -m intake.server`) as a real process on a loopback port, for
`make run`, the HIL suite and the tests alike: the server picks its port and says it in its first
line (`listening on http://HOST:PORT`); its clients' tokens are in a 0600 file beside its database,
never on its command line; TLS or a fault mode are extra arguments."""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from .procs import Process

BRIDGE_CLIENT = "bridge"  # the one client an intake has unless told otherwise


def new_token() -> str:
    return secrets.token_urlsafe(24)


def write_tokens(path: Path, clients: Mapping[str, str]) -> Path:
    """The intake's tokens file, `client_id token` a line, created 0600 (never readable by others,
    whatever the umask) and rewritten whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of another mode is truncated, not recreated
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{client} {token}\n" for client, token in clients.items()))
    return path


class Intake:
    def __init__(self, db: Path, *, clients: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 log: Path | None = None, port: int = 0):
        """db: its SQLite file; clients: client id -> bearer token (default: one client, `bridge`, with
        a fresh token), written to `<db>.tokens`; `token` is the first client's, which the calls below
        use; log: its output (default: beside the database); port: 0 lets the server pick a free one."""
        self.db = Path(db)
        self.clients = dict(clients) if clients is not None else {BRIDGE_CLIENT: new_token()}
        self.client, self.token = next(iter(self.clients.items()))
        self.tokens_path = self.db.with_suffix(".tokens")
        self.log_path = Path(log) if log else self.db.with_suffix(".log")
        cmd = [sys.executable, "-m", "intake.server", "--host", "127.0.0.1", "--port", str(port), "--db",
               str(self.db), "--tokens", str(self.tokens_path), "--quiet", *args]
        self.process = Process(cmd, name="intake", log=self.log_path, ready="listening on ")
        self.url = ""
        self.scheme = "http"
        self.port = 0

    @property
    def proc(self):
        return self.process.proc

    def start(self, timeout: float = 30.0) -> Intake:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        write_tokens(self.tokens_path, self.clients)
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
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def set_mode(self, mode: str, delay_s: float | None = None) -> None:
        """normal / fail / stall / slow / drop (docs/intake-api.md section 7); `delay_s` for slow."""
        self._call("POST", "/admin/mode", {"mode": mode} if delay_s is None else {"mode": mode, "delay_s": delay_s})

    def incidents(self, limit: int = 1000) -> list[dict]:
        return self._call("GET", f"/v1/incidents?limit={limit}")["incidents"]

    def tests(self, limit: int = 1000) -> list[dict]:
        """The test messages this client sent (the devices' self-tests and periodic tests)."""
        return self._call("GET", f"/v1/tests?limit={limit}")["tests"]

    def incident(self, incident_id: str) -> dict:
        return self._call("GET", f"/v1/incidents/{incident_id}")

"""The reference SMSC (`python -m intake.smsc`) as a real process on loopback ports, for the tests and
`make run`: it picks its ports and says them in its first line (`smsc ready port=P control=C`)."""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.request
from pathlib import Path

from .procs import Process


class Smsc:
    def __init__(self, workdir: Path, *, system_id: str = "bridge", deliver_ms: int = 200):
        """An SMSC with one account, `system_id` and a fresh password (in a 0600 file, never in argv)."""
        self.workdir = Path(workdir)
        self.system_id = system_id
        self.password = secrets.token_hex(4)  # SMPP 3.4 allows 8 characters
        self.accounts = self.workdir / "smsc-accounts"
        self.log_path = self.workdir / "smsc.log"
        self.deliver_ms = deliver_ms
        self.process: Process | None = None
        self.port = self.control_port = 0

    def start(self, timeout: float = 20.0) -> Smsc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.accounts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.system_id} {self.password}\n")
        self.process = Process([sys.executable, "-m", "intake.smsc", "--accounts", str(self.accounts),
                                "--deliver-ms", str(self.deliver_ms)], name="smsc", log=self.log_path,
                               ready="smsc ready")
        line = self.process.start(timeout)
        fields = dict(p.split("=", 1) for p in line.split()[2:])
        self.port, self.control_port = int(fields["port"]), int(fields["control"])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def notify_options(self, source: str = "BAOCHAY") -> dict:
        """The bridge's `notify.options` for this SMSC."""
        return {"host": "127.0.0.1", "port": self.port, "system_id": self.system_id, "password": self.password,
                "source": source}

    # -- what a test asks of it ----------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def messages(self) -> list[dict]:
        return self._call("GET", "/messages")

    def reply(self, sender: str, text: str = "OK", to: str = "BAOCHAY") -> int:
        return self._call("POST", "/reply", {"from": sender, "to": to, "text": text})["sent_to_sessions"]

    def unreachable(self, *numbers: str) -> None:
        self._call("POST", "/unreachable", {"numbers": list(numbers)})

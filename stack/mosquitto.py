"""A real Mosquitto broker on a loopback port, with per-user passwords and an ACL.

The config, password file, ACL and persistence live in one directory so the broker can be stopped and
started again on the same state (the outage tests rely on that).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware import mqtt_codec
from provisioning.acl import DEVICE_ACL, bridge_acl, observer_acl

from .passwd import write_password_file
from .ports import free_port, wait_port
from .procs import Process, wait_until


class MosquittoMissing(RuntimeError):
    pass


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.path.exists(cand):
            return cand
    raise MosquittoMissing(
        "mosquitto is not installed: run `make setup` as root, or `sudo apt-get install mosquitto`"
    )




@dataclass
class Mosquitto:
    """One broker process. `users` maps user name -> password; `bridge_users` get the bridge ACL."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    bridge_users: tuple[str, ...] = ()
    observer_users: tuple[str, ...] = ()
    port: int = 0
    host: str = "127.0.0.1"
    anonymous: bool = False
    max_packet_size: int = 65536
    # Optional TLS listener on `host` (same users and ACL): the server certificate, its key, and the CA
    # that signed it (stack/tls.py makes a throwaway set). tls_port 0 picks a free port.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_port: int = 0
    _process: Process | None = field(default=None, init=False, repr=False)
    _added: dict[str, str] = field(default_factory=dict, init=False, repr=False)  # since the last (re)load

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if self.tls_cert and not self.tls_port:
            self.tls_port = free_port(self.host)
        self.write_config()

    @property
    def proc(self) -> subprocess.Popen | None:
        """The broker process while it runs."""
        return self._process.proc if self._process else None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def add_user(self, name: str, password: str) -> None:
        """Add a user; takes effect on the next start (or reload)."""
        self.users[name] = password
        self._added[name] = password
        self.write_config()

    def write_config(self) -> None:
        d = self.workdir
        (d / "data").mkdir(exist_ok=True)
        write_password_file(d / "passwd", self.users)
        acl = "".join(bridge_acl(u) for u in self.bridge_users) + "".join(observer_acl(u) for u in self.observer_users)
        acl += "\n" + DEVICE_ACL
        (d / "acl").write_text(acl)
        user_line = "user root\n" if os.geteuid() == 0 else ""
        self.conf_path.write_text(
            f"# generated for a local run: loopback only\n"
            f"{user_line}"
            f"per_listener_settings false\n"
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            f"password_file {d / 'passwd'}\n"
            f"acl_file {d / 'acl'}\n"
            f"persistence true\n"
            f"persistence_location {d / 'data'}/\n"
            f"autosave_interval 1\n"
            f"max_packet_size {self.max_packet_size}\n"
            f"max_inflight_messages 1000\n"
            f"set_tcp_nodelay true\n"
            f"max_queued_messages 100000\n"
            f"log_dest file {self.log_path}\n"
            f"log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"connection_messages true\n"
            f"{self._tls_listener()}"
        )

    def _tls_listener(self) -> str:
        if not self.tls:
            return ""
        if not (self.tls_cert and self.tls_key and self.tls_ca):
            raise ValueError("a TLS listener needs tls_cert, tls_key and tls_ca")
        return (
            f"listener {self.tls_port} {self.host}\n"
            f"cafile {Path(self.tls_ca).resolve()}\n"
            f"certfile {Path(self.tls_cert).resolve()}\n"
            f"keyfile {Path(self.tls_key).resolve()}\n"
        )

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.proc and self.proc.poll() is None:
            return self
        self._process = Process([find_mosquitto(), "-c", str(self.conf_path)], name="mosquitto",
                                log=self.workdir / "mosquitto.stderr")
        self._process.start()
        try:
            wait_port(self.host, self.port, timeout)
            if self.tls:
                wait_port(self.host, self.tls_port, timeout)
            # Mosquitto opens its listeners before it installs its signal handlers: a reload (SIGHUP)
            # in between ends the broker (seen 4 times in 150 starts on a loaded machine).
            wait_until(self.catches_sighup, timeout, 0.01, what="mosquitto handling SIGHUP")
        except (TimeoutError, AssertionError):
            self.stop()
            raise RuntimeError(f"mosquitto did not start; see {self.log_path}") from None
        self._added.clear()
        return self

    def catches_sighup(self) -> bool:
        """Has the running broker installed its SIGHUP handler? (Linux: SigCgt in /proc; elsewhere the
        question cannot be asked, and a started broker is taken as ready.)"""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            return True
        for line in status.splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGHUP - 1) & 1)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (SIGTERM) so that persistence is saved, as a broker restart would."""
        if self._process:
            self._process.stop(timeout)

    def reload(self, timeout: float = 30.0) -> None:
        """Re-read the password file and ACL without dropping connections (SIGHUP); returns once every
        user added since the last (re)load can log in."""
        if not (self._process and self._process.running):
            return
        deadline = time.monotonic() + timeout
        for name, password in self._added.items():
            # A SIGHUP that reaches Mosquitto while it is still handling the one before is lost (seen
            # once in a few hundred reloads on a loaded machine): ask again until the user logs in.
            def logs_in(name: str = name, password: str = password) -> bool:
                return self.accepts_login(name, password)

            while True:
                self._process.signal(signal.SIGHUP)
                try:
                    wait_until(logs_in, min(3.0, max(0.1, deadline - time.monotonic())), 0.05,
                               what=f"broker accepting user {name} after reload")
                    break
                except AssertionError:
                    if not self._process.running:
                        raise RuntimeError(f"mosquitto exited during a reload (status "
                                           f"{self.proc.returncode}); see {self.log_path}") from None
                    if time.monotonic() >= deadline:
                        raise
        self._added.clear()

    def accepts_login(self, user: str, password: str) -> bool:
        """True when a CONNECT with these credentials is answered CONNACK 0 (then DISCONNECT)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                s.sendall(mqtt_codec.connect(f"login-check-{os.getpid()}", user, password, keepalive=5))
                answer = s.recv(4)
                s.sendall(mqtt_codec.disconnect())
        except OSError:
            return False
        return len(answer) == 4 and answer[0] >> 4 == mqtt_codec.CONNACK and answer[3] == 0

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

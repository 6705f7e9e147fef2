"""stack/mosquitto.py: a broker that has just started survives a reload.

Mosquitto opens its listeners before it installs its signal handlers, and a SIGHUP in between ends it.
A stand-in with a wide window (it listens, then waits before catching SIGHUP) shows that start()
returns only once a reload is safe, and that a broker dying in a reload is named, not waited on.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from stack.mosquitto import Mosquitto

STAND_IN = """\
import os, re, signal, socket, sys, time
conf = open(sys.argv[sys.argv.index("-c") + 1]).read()
port = int(re.search(r"^listener (\\d+)", conf, re.M).group(1))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(8)
time.sleep(float({delay!r}))  # the window Mosquitto leaves between its listeners and its handlers
on_hup = {on_hup!r}  # None: never catch it; "ignore": a reload; "exit": a broker crashing in one
if on_hup:
    signal.signal(signal.SIGHUP, lambda *a: None if on_hup == "ignore" else os._exit(3))
while True:
    time.sleep(1)
"""


def stand_in(tmp_path: Path, monkeypatch, delay: float, on_hup: str | None = "ignore") -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "mosquitto"
    exe.write_text(f"#!{sys.executable}\n" + STAND_IN.format(delay=delay, on_hup=on_hup))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_start_returns_once_a_reload_no_longer_ends_the_broker(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, delay=0.5)
    b = Mosquitto(tmp_path / "broker", users={"u": "p"})
    b.start()
    try:
        assert b.catches_sighup()
        b.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # a default-action SIGHUP ends a process at once; give it the chance
        assert b.proc.poll() is None, "the reload ended the broker"
    finally:
        b.stop()
    assert not b.catches_sighup()


def test_a_broker_that_never_handles_sighup_is_reported_as_not_started(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, delay=0, on_hup=None)
    b = Mosquitto(tmp_path / "broker")
    with pytest.raises(RuntimeError, match="mosquitto did not start"):
        b.start(timeout=1.0)
    assert not b._process.running  # stopped, not left behind


def test_a_broker_ended_by_a_reload_is_named_without_waiting_out_the_reload(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, delay=0, on_hup="exit")
    b = Mosquitto(tmp_path / "broker")
    b.start()
    b.add_user("dev", "pw")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="mosquitto exited during a reload"):
        b.reload(timeout=30)
    assert time.monotonic() - t0 < 15  # one login window, not the whole 30 s

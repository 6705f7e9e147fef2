"""Fixtures for the bridge tests (helpers in bridge_harness.py, importable by the test files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_here = str(Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

from bridge_harness import Fleet, bridge_for  # noqa: E402
from fakesink_http import FakeIntake  # noqa: E402

from stack.bridge import Bridge  # noqa: E402
from stack.mosquitto import Mosquitto  # noqa: E402


@pytest.fixture
def fleet():
    f = Fleet(3)
    yield f
    f.close()


@pytest.fixture
def broker(tmp_path, fleet):
    b = Mosquitto(tmp_path / "broker", users={**fleet.users(), "bridge": "bridge-pw"}, bridge_users=("bridge",))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def intake():
    i = FakeIntake()
    yield i
    i.close()


@pytest.fixture
def make_bridge(tmp_path, broker, intake, fleet):
    made: list[Bridge] = []

    def make(**overrides) -> Bridge:
        bp = bridge_for(tmp_path / "bridge", broker, intake, **overrides)
        fleet.register(bp.db)
        made.append(bp)
        return bp

    yield make
    for bp in made:
        bp.kill()



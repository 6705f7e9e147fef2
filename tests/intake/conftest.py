"""Fixtures: a shared intake server per test module, and a fresh one for tests that change its mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from intake_harness import CLIENTS, TOKEN  # noqa: E402

from bridge.sinks.intake_json import IntakeJsonSink  # noqa: E402
from stack.intake import Intake  # noqa: E402


@pytest.fixture(scope="module")
def intake(tmp_path_factory):
    server = Intake(tmp_path_factory.mktemp("intake") / "intake.db", clients=CLIENTS)
    with server:
        yield server


@pytest.fixture
def fresh_intake(tmp_path):
    server = Intake(tmp_path / "intake.db", clients=CLIENTS)
    with server:
        yield server


@pytest.fixture
def make_sink():
    made = []

    def make(server: Intake, **options) -> IntakeJsonSink:
        options.setdefault("token", TOKEN)
        options.setdefault("timeout_s", 5)
        sink = IntakeJsonSink("intake-test", server.url, **options)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        sink.close()

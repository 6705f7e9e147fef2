"""Fixtures for integration tests: a real Mosquitto on a free loopback port and virtual boards."""

from __future__ import annotations

import pytest
from integration.support import TEST_USER, Observer

from stack.devices import device_config, write_device
from stack.mosquitto import Mosquitto
from stack.vboard import VirtualBoard


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker", users={TEST_USER[0]: TEST_USER[1]}, bridge_users=(TEST_USER[0],))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def observer(broker):
    o = Observer(broker)
    yield o
    o.close()


@pytest.fixture
def make_board(broker, tmp_path):
    """make_board(dev, **config overrides) -> a started VirtualBoard registered on the broker."""
    boards: list[VirtualBoard] = []

    def make(dev="hn-a-0001", heap=None, start=True, board=None, rom=True, **overrides):
        cfg = device_config(dev, broker.port, **overrides)
        broker.add_user(dev, cfg["mqtt"]["password"])
        broker.reload()
        path = write_device(cfg, tmp_path / "devices" / dev)
        vb = VirtualBoard(tmp_path / "flash" / dev, device_config=path, heap=heap, log=tmp_path / f"{dev}.log",
                          board=board, rom=rom)
        vb.cfg = cfg
        boards.append(vb)
        if start:
            vb.start()
        return vb

    yield make
    for vb in boards:
        vb.stop()



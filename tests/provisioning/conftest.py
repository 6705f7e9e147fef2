"""Fixtures for the provisioning tests: a devices directory, device records, a small firmware tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from provisioning.boards import get_board
from provisioning.devices import Network, Site, create_device, load_device

# the helpers module beside this file (prov_helpers) is imported by name from the tests
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def devices_dir(tmp_path):
    return tmp_path / "devices"


@pytest.fixture
def make_device(devices_dir):
    def make(dev_id="hn-a-0001", board="esp32-devkitc", **net):
        site = Site(building="Toà A", address="1 Tràng Tiền, Hoàn Kiếm", floor="3", room="301",
                    lat=21.028511, lon=105.804817, acc=15, contact_phone="0901234567", province="Hà Nội")
        net.setdefault("broker_host", "127.0.0.1")
        create_device(devices_dir, dev_id, board, site, Network(**net))
        return load_device(devices_dir, dev_id), get_board(board)

    return make


@pytest.fixture
def small_firmware(tmp_path):
    """A firmware tree of our own: main.py kept as source, modules in a package compiled to .mpy."""
    fw = tmp_path / "fw"
    (fw / "pkg").mkdir(parents=True)
    (fw / "main.py").write_text("import probe\nprint(probe.answer())\n")
    (fw / "probe.py").write_text("def answer():\n    return 'probe-ok-' + str(6 * 7)\n")
    (fw / "pkg" / "__init__.py").write_text("")
    (fw / "pkg" / "mod.py").write_text("VALUE = 17\n")
    return fw

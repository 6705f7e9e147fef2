"""The virtual board's ROM (the firmware's ROMFS image and the host that maps it, read back by real
MicroPython) and its choice of board."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from provisioning.image import ImageFile
from provisioning.romfs import build_romfs
from provisioning.vboard import ROMHOST

READ_BACK = """
import os, uctypes, vfs
a, n = os.getenv("BAOCHAY_ROM").split(":")
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(a), int(n))), "/rom")
print(sorted(os.listdir("/rom")), sorted(os.listdir("/rom/drivers")))
print(open("/rom/drivers/b.txt").read())
import sys
sys.path.insert(0, "/rom")
import mod
print(mod.VALUE)
"""


def test_image_read_back_and_imported_by_micropython(tmp_path):
    files = [ImageFile("/a.txt", b"first"), ImageFile("/drivers/b.txt", b"second"),
             ImageFile("/mod.py", b"VALUE = 6 * 7\n")]
    rom = tmp_path / "rom.img"
    rom.write_bytes(build_romfs(files))
    out = subprocess.run([sys.executable, str(ROMHOST), str(rom), "-c", READ_BACK],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["['a.txt', 'drivers', 'mod.py'] ['b.txt']", "second", "42"]


def test_a_path_listed_twice_or_both_file_and_directory_is_refused():
    with pytest.raises(ValueError, match="listed twice"):
        build_romfs([ImageFile("/a.mpy", b"1"), ImageFile("/a.mpy", b"2")])
    with pytest.raises(ValueError, match="both a file and a directory"):
        build_romfs([ImageFile("/x", b"1"), ImageFile("/x/y.mpy", b"2")])


def test_romhost_says_what_is_wrong_with_an_empty_image(tmp_path):
    rom = tmp_path / "empty.img"
    rom.write_bytes(b"")
    out = subprocess.run([sys.executable, str(ROMHOST), str(rom), "-c", "print(1)"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "is empty" in out.stderr


@pytest.mark.parametrize("board, why", [("virtual-bogus", "virtual-bogus"), ("esp32-devkitc", "is a real board")])
def test_vboard_board_must_be_a_virtual_entry_of_boards_yaml(tmp_path, board, why):
    from provisioning.vboard import main

    dev = tmp_path / "device.json"
    dev.write_text("{}")
    with pytest.raises(SystemExit) as e:
        main(["--device-config", str(dev), "--flash", str(tmp_path / "flash"), "--board", board])
    assert why in str(e.value)


def test_vboard_board_json_for_the_panic_button(tmp_path):
    from provisioning.vboard import prepare_flash

    dev = tmp_path / "device.json"
    dev.write_text("{}")
    prepare_flash(tmp_path / "flash", dev, "virtual-panic")
    board = json.loads((tmp_path / "flash" / "board.json").read_text())
    assert board["sensors"] == [] and board["chip"] == "virtual"

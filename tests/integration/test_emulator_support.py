"""The emulated ESP32's pieces that need no emulator: finding it (and saying how to install it when
it is not there), the per-connection relay of its closed network, and the flash file it boots."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from stack import esp32_qemu
from stack.esp32_qemu import EmulatorMissing, find_emulator, merged_flash
from stack.procs import ROOT

RELAY = ROOT / "stack" / "relay.py"


def test_without_an_emulator_the_error_says_how_to_install_one(tmp_path, monkeypatch):
    monkeypatch.setattr(esp32_qemu, "SHARED", tmp_path / "no-such-folder")
    monkeypatch.setenv(esp32_qemu.ENV, str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EmulatorMissing) as e:
        find_emulator()
    text = str(e.value)
    assert "idf_tools.py install qemu-xtensa" in text and "micropython.org/download/ESP32_GENERIC" in text
    assert "libslirp0" in text and str(tmp_path / "empty" / "qemu-system-xtensa") in text  # what was tried


def test_a_binary_that_cannot_run_is_named_with_its_error(tmp_path, monkeypatch):
    fake = tmp_path / "qemu-system-xtensa"
    fake.write_text("#!/bin/sh\necho 'error while loading shared libraries: libslirp.so.0' >&2\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setattr(esp32_qemu, "SHARED", tmp_path / "no-such-folder")
    monkeypatch.setenv(esp32_qemu.ENV, str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorMissing, match="libslirp.so.0"):
        find_emulator()


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(b"echo:" + data)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_the_relay_carries_one_connection_both_ways_and_ends_with_it():
    srv, port = _echo_server()
    with srv:
        p = subprocess.Popen([sys.executable, str(RELAY), "127.0.0.1", str(port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert p.stdin and p.stdout
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        assert p.stdout.read(11) == b"echo:hello\n"
        p.stdin.close()  # the device closed its connection
        assert p.wait(10) == 0


def test_the_relay_to_a_port_nobody_listens_on_closes_at_once():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        r = subprocess.run([sys.executable, str(RELAY), "127.0.0.1", str(port)], input=b"x", timeout=10,
                           capture_output=True)
    assert r.returncode == 1 and r.stdout == b""


def test_a_flash_file_holds_the_firmware_and_the_image_at_their_offsets(tmp_path):
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"\xe9" + b"F" * 999)
    img = tmp_path / "fs.img"
    img.write_bytes(b"L" * 4096)
    out = merged_flash(fw, img, tmp_path / "flash.bin")
    data = out.read_bytes()
    assert len(data) == 4 << 20 and data[:0x1000] == b"\xff" * 0x1000
    assert data[0x1000:0x1000 + 1000] == fw.read_bytes() and data[0x1000 + 1000:0x1000 + 1001] == b"\xff"
    assert data[0x200000:0x201000] == b"L" * 4096 and data[0x201000:] == b"\xff" * (len(data) - 0x201000)
    assert out.stat().st_mode & 0o077 == 0  # it holds the device key


# A stand-in for QEMU that is only its UART: it dials the board's serial port as QEMU's `-serial tcp:`
# does and prints what a chip would, numbering its starts in a file beside it.
FAKE_CHIP = r'''#!/usr/bin/env python3
import pathlib, socket, sys, time
starts = pathlib.Path(__file__).with_name("starts")
n = int(starts.read_text()) + 1 if starts.exists() else 1
starts.write_text(str(n))
host, port = sys.argv[sys.argv.index("-serial") + 1].split("tcp:")[1].split(":")[:2]
s = socket.create_connection((host, int(port)))
s.sendall(b'{"ev":"boot","start":%d}\r\n' % n)
if n == 1:  # the link watch gives up on the network, the chip resets itself
    s.sendall(b'{"outage_s":60,"action":"reboot","ev":"net","detail":"write timed out"}\r\n')
    s.sendall(b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0xc (SW_CPU_RESET),boot:0x12 (SPI_FAST_FLASH_BOOT)\r\n")
elif n == 2:  # a reset for any other reason: left to the chip
    s.sendall(b"rst:0xc (SW_CPU_RESET),boot:0x12 (SPI_FAST_FLASH_BOOT)\r\n")
time.sleep(600)
'''


def _fake_board(tmp_path, **kw) -> esp32_qemu.EmulatedBoard:
    fake = tmp_path / "qemu-system-xtensa"
    fake.write_text(FAKE_CHIP)
    fake.chmod(0o755)
    emu = esp32_qemu.Emulator(fake, fake, None, None)
    return esp32_qemu.EmulatedBoard(tmp_path / "flash.bin", emulator=emu, log=tmp_path / "qemu.log", **kw)


def test_a_chip_rebooted_for_its_network_is_power_cycled_and_nothing_else_is(tmp_path):
    board = _fake_board(tmp_path)
    try:
        board.start(timeout=20)
        assert board.console is not None
        second = board.console.wait_for(lambda m: m.get("ev") == "boot" and m.get("start") == 2, 20)
        assert board.revivals == 1 and second
        assert "power cycle 1: the chip rebooted for its network" in (tmp_path / "qemu.log").read_text()
        # the second start's own reset (no network reboot before it) is not followed by a power cycle
        assert board.console.first(lambda m: m.get("start") == 3, 3) is None
        assert board.revivals == 1 and (tmp_path / "starts").read_text() == "2"
    finally:
        board.stop()


def test_without_revive_network_the_chips_reset_is_left_as_it_is(tmp_path):
    board = _fake_board(tmp_path, revive_network=False)
    try:
        board.start(timeout=20)
        assert board.console is not None
        assert board.console.first(lambda m: m.get("start") == 2, 3) is None
        assert board.revivals == 0
    finally:
        board.stop()

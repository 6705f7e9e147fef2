"""flash: esptool for real without hardware (merge-bin, a pty where no chip answers), and clear refusals."""

import os
import threading

import pytest
import serial
from prov_helpers import run_cli

from provisioning.boards import get_board
from provisioning.flashing import FlashError, check_chip, merge
from provisioning.image import build
from provisioning.serialport import PortError, check_port


@pytest.fixture
def pty():
    """A pseudo-terminal with nobody (no ROM loader) behind it; what is written to it is drained."""
    master, slave = os.openpty()
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                os.read(master, 4096)
            except OSError:
                return

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    yield os.ttyname(slave)
    stop.set()
    os.close(slave)
    os.close(master)
    t.join(2)


@pytest.fixture
def fake_firmware(tmp_path):
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(bytes([0xE9, 0x03, 0x02, 0x20]) + os.urandom(300_000))  # image magic, then noise
    return fw


@pytest.mark.parametrize("board_name", ["esp32-devkitc", "esp32-c3-devkitm"])
def test_merge_bin_places_firmware_and_filesystem_at_the_boards_offsets(tmp_path, make_device, fake_firmware,
                                                                        board_name):
    device, board = make_device(board=board_name)
    r = build(device, board, tmp_path / "out")
    merged = merge(board, r.image, fake_firmware, tmp_path / "merged.bin")
    data = merged.read_bytes()
    fw = fake_firmware.read_bytes()
    off = board.firmware_offset
    assert data[:off] == b"\xff" * off  # nothing below the firmware offset (0x1000 on ESP32)
    assert data[off:off + len(fw)] == fw
    assert set(data[off + len(fw):board.filesystem.offset]) <= {0xFF}
    assert data[board.filesystem.offset:] == r.image.read_bytes()
    assert len(data) == board.flash_bytes
    assert merged.stat().st_mode & 0o077 == 0


def test_flash_merge_command_writes_one_image_per_device(tmp_path, make_device, devices_dir, fake_firmware):
    make_device()
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--merge",
                "--firmware", str(fake_firmware), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    merged = tmp_path / "build" / "hn-a-0001" / "merged.bin"
    assert merged.stat().st_size == 4 * 1024 * 1024
    assert "write it at 0x0" in r.stdout


def test_merge_without_firmware_is_refused(tmp_path, make_device, devices_dir):
    make_device()
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--merge", cwd=tmp_path)
    assert r.returncode == 1 and "--merge needs --firmware" in r.stderr


def test_chip_decision():
    devkitc, c3, s3 = get_board("esp32-devkitc"), get_board("esp32-c3-devkitm"), get_board("esp32-s3-devkitc")
    check_chip(devkitc, "ESP32", "4MB")
    check_chip(c3, "ESP32-C3", "4MB")
    check_chip(s3, "ESP32-S3", "8MB")
    with pytest.raises(FlashError, match=r"wrong chip: the board on this port is an ESP32-C3.*'esp32-devkitc' is an ESP32"):
        check_chip(devkitc, "ESP32-C3", "4MB")
    with pytest.raises(FlashError, match=r"wrong flash size: this ESP32-S3 has 16MB.*expects 8MB"):
        check_chip(s3, "ESP32-S3", "16MB")
    with pytest.raises(FlashError, match=r"could not detect the flash size"):
        check_chip(devkitc, "ESP32", None)
    with pytest.raises(FlashError, match=r"not a real chip"):
        check_chip(get_board("virtual"), "ESP32", "4MB")


def test_flash_on_a_port_where_no_chip_answers_fails_cleanly(tmp_path, make_device, devices_dir, pty):
    make_device()
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--port", pty,
                "--connect-attempts", "2", cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert f"error: no ESP chip answered on {pty}" in r.stderr
    assert "Hold the BOOT button" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_native_usb_board_gets_the_boot_button_hint(tmp_path, make_device, devices_dir, pty):
    make_device(board="esp32-s3-devkitc")
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--port", pty,
                "--connect-attempts", "1", cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and "native USB: hold BOOT" in r.stderr


def test_missing_serial_port(tmp_path, make_device, devices_dir):
    make_device()
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--port", "/dev/ttyUSB97",
                cwd=tmp_path)
    assert r.returncode == 1
    assert "serial port /dev/ttyUSB97 not found. Is the board plugged in" in r.stderr
    assert not (tmp_path / "build").exists()  # refused before compiling anything


def test_busy_serial_port(tmp_path, make_device, devices_dir, pty):
    make_device()
    holder = serial.serial_for_url(pty, exclusive=True)  # e.g. a serial monitor left open
    try:
        with pytest.raises(PortError, match="is busy"):
            check_port(pty)
        r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--port", pty,
                    cwd=tmp_path)
        assert r.returncode == 1 and f"serial port {pty} is busy: another program has it open" in r.stderr
        r = run_cli("verify", "--port", pty, cwd=tmp_path)
        assert r.returncode == 1 and "is busy" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.close()


def test_flash_without_a_port_for_a_real_board(tmp_path, make_device, devices_dir):
    make_device()
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", cwd=tmp_path)
    assert r.returncode == 1 and "flash needs --port" in r.stderr


def test_flash_for_the_virtual_board_writes_its_image(tmp_path, make_device, devices_dir):
    make_device("vb-0001", board="virtual")
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "vb-0001", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dest = tmp_path / "var" / "vboards" / "vb-0001" / "fs.img"
    assert dest.read_bytes() == (tmp_path / "build" / "vb-0001" / "fs.img").read_bytes()
    other = tmp_path / "elsewhere" / "vb.img"
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "vb-0001", "--port", str(other),
                cwd=tmp_path)
    assert r.returncode == 0 and other.stat().st_size == 2 * 1024 * 1024


def test_flash_of_an_unknown_device(tmp_path, devices_dir):
    r = run_cli("flash", "--devices-dir", str(devices_dir), "--device", "nobody-1", "--port", "/dev/null",
                cwd=tmp_path)
    assert r.returncode == 1 and "device 'nobody-1' not found" in r.stderr

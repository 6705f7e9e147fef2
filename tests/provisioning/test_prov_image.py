"""build: the LittleFS image holds exactly the compiled firmware and configs, in the board's geometry."""

import json
import subprocess
import time

import littlefs
import pytest
from prov_helpers import ROOT, micropython, run_cli

from provisioning.image import (
    FIRMWARE_DIR,
    HOST_ONLY,
    ImageError,
    build,
    firmware_files,
    image_path,
    read_image,
)

FILEDEV_DIR = ROOT / "firmware" / "board"


def mount(image, board):
    geo = board.filesystem
    ctx = littlefs.UserContext(buffer=bytearray(image.read_bytes()))
    return littlefs.LittleFS(context=ctx, block_size=geo.block_size, block_count=geo.block_count,
                             read_size=geo.read_size, prog_size=geo.prog_size, lookahead_size=geo.lookahead)


def test_image_round_trip_with_the_real_firmware(tmp_path, make_device):
    before = int(time.time())
    device, board = make_device()
    # the record carries the floor of the device's clock (TLS needs a date): the time it was made
    assert before <= device["clock_floor"] <= time.time()
    r = build(device, board, tmp_path / "out")
    expected = {image_path(f).path: f.data for f in firmware_files(FIRMWARE_DIR, chip=True)}
    expected["/board.json"] = json.dumps(board.board_json(), separators=(",", ":"), ensure_ascii=False).encode()
    expected["/device.json"] = json.dumps(device, separators=(",", ":"), ensure_ascii=False).encode()
    got = read_image(r.image, board)
    assert got == expected
    assert "/main.py" not in got or got["/main.py"] == (FIRMWARE_DIR / "main.py").read_bytes()  # kept as source
    mpys = [p for p in got if p.endswith(".mpy")]
    assert mpys and all(got[p][:2] == b"M\x06" for p in mpys)  # .mpy format 6 (MicroPython 1.29)
    assert not [p for p in got if p.endswith(".py") and p not in ("/main.py", "/boot.py")]
    # modules in /lib, only the entry points and configs at the root (every lookup scans the root)
    assert sorted(p for p in got if p.count("/") == 1) == ["/board.json", "/boot.py", "/device.json", "/main.py"]
    assert "/lib/app.mpy" in got and "/lib/board/esp32.mpy" in got
    # a chip's image leaves out what only the virtual board and the host load
    for host_only in HOST_ONLY:
        assert "/lib/" + host_only[:-3] + ".mpy" not in got, host_only


def test_a_record_made_before_the_clock_floor_gets_the_build_time(tmp_path, make_device):
    device, board = make_device()
    del device["clock_floor"]
    before = int(time.time())
    written = json.loads(read_image(build(device, board, tmp_path / "out").image, board)["/device.json"])
    assert before <= written["clock_floor"] <= time.time()


def test_a_chip_provisioned_with_simulated_sensors_keeps_them(tmp_path, make_device):
    device, board = make_device(test_rig=True)
    device["rig_sensors"] = "simulated"
    got = read_image(build(device, board, tmp_path / "out").image, board)
    assert "/lib/board/virtual_sensors.mpy" in got and "/lib/board/virtual.mpy" not in got
    device["test_rig"] = False  # never on an installed device, whatever the record says
    got = read_image(build(device, board, tmp_path / "out2").image, board)
    assert "/lib/board/virtual_sensors.mpy" not in got


def test_a_virtual_boards_image_keeps_the_virtual_board(tmp_path, make_device):
    device, board = make_device("vb-img-01", board="virtual")
    got = read_image(build(device, board, tmp_path / "out").image, board)
    assert "/lib/board/virtual.mpy" in got and "/lib/protocol_host.mpy" in got


def test_geometry_equals_the_boards_partition(tmp_path, make_device):
    for name, size, blocks in (("esp32-devkitc", 2 * 1024 * 1024, 512), ("esp32-s3-devkitc", 6 * 1024 * 1024, 1536)):
        device, board = make_device(f"dev-{blocks}", board=name)
        r = build(device, board, tmp_path / name)
        assert r.image.stat().st_size == size == board.filesystem.size
        st = mount(r.image, board).fs_stat()
        assert (st.block_count, st.block_size) == (blocks, 4096)
        manifest = json.loads(r.manifest.read_text())
        assert manifest["filesystem"]["block_count"] == blocks
        assert manifest["free_bytes"] + manifest["used_bytes"] == size
        assert device["key"] not in r.manifest.read_text()  # the manifest is safe to share


def test_build_command_reports_sizes_and_keeps_the_image_private(tmp_path, make_device, devices_dir):
    make_device()
    r = run_cli("build", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "512 blocks of 4096" in r.stdout and "free" in r.stdout
    image = tmp_path / "build" / "hn-a-0001" / "fs.img"
    assert image.stat().st_mode & 0o077 == 0
    assert (tmp_path / "build" / "hn-a-0001" / "manifest.json").exists()


def test_an_image_that_does_not_fit_is_refused(tmp_path, make_device, small_firmware):
    device, board = make_device()
    (small_firmware / "main.py").write_bytes(b"# " + b"x" * (3 * 1024 * 1024) + b"\n")  # 3 MiB > 2 MiB
    with pytest.raises(ImageError, match=r"do not fit the 2,097,152-byte filesystem of board 'esp32-devkitc'"):
        build(device, board, tmp_path / "out", firmware_dir=small_firmware)
    assert not (tmp_path / "out" / "fs.img").exists()


def test_a_syntax_error_in_the_firmware_is_reported(tmp_path, make_device, small_firmware):
    device, board = make_device()
    (small_firmware / "probe.py").write_text("def broken(:\n")
    with pytest.raises(ImageError, match=r"mpy-cross failed on probe.py"):
        build(device, board, tmp_path / "out", firmware_dir=small_firmware)


MP_SCRIPT = """
import sys, vfs, os
sys.path.insert(0, {filedev!r})
from filedev import FileBlockDevice
dev = FileBlockDevice({image!r})
vfs.mount(vfs.VfsLfs2(dev, readsize=32, progsize=32, lookahead=32), "/fs")
sys.path.insert(0, "/fs/lib")
import probe
from pkg import mod
print("import", probe.answer(), mod.VALUE)
print("files", sorted(os.listdir("/fs")))
sys.path.insert(0, {firmware!r})
import config
print("board", config.load_board("/fs/board.json")["name"])
print("device", config.load("/fs/device.json")["dev"])
with open("/fs/written-by-device.txt", "w") as f:
    f.write("alarm outbox survives")
os.mkdir("/fs/outbox")
with open("/fs/outbox/00000001", "wb") as f:
    f.write(bytes(range(256)) * 40)
vfs.umount("/fs")
dev.close()
print("done")
"""


def test_micropython_mounts_the_image_imports_mpy_and_writes_back(tmp_path, make_device, small_firmware):
    device, board = make_device()
    r = build(device, board, tmp_path / "out", firmware_dir=small_firmware)
    files = read_image(r.image, board)
    assert "/lib/probe.mpy" in files and "/probe.py" not in files and "/lib/pkg/mod.mpy" in files
    script = tmp_path / "mount.py"
    script.write_text(MP_SCRIPT.format(filedev=str(FILEDEV_DIR), image=str(r.image), firmware=str(FIRMWARE_DIR)))
    out = subprocess.run([micropython(), str(script)], capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert "done" in lines, out.stdout + out.stderr
    assert "import probe-ok-42 17" in lines
    assert "board esp32-devkitc" in lines and "device hn-a-0001" in lines
    # the host reads back what the device wrote
    after = read_image(r.image, board)
    assert after["/written-by-device.txt"] == b"alarm outbox survives"
    assert after["/outbox/00000001"] == bytes(range(256)) * 40
    assert after["/lib/probe.mpy"] == files["/lib/probe.mpy"]
    assert r.image.stat().st_size == board.filesystem.size  # the device never grows the image


def test_filedev_refuses_an_image_that_is_not_whole_blocks(tmp_path):
    bad = tmp_path / "bad.img"
    bad.write_bytes(b"\xff" * 5000)
    code = f"import sys; sys.path.insert(0, {str(FILEDEV_DIR)!r})\nfrom filedev import FileBlockDevice\n" \
           f"try:\n    FileBlockDevice({str(bad)!r})\nexcept ValueError as e:\n    print('refused', e)\n"
    out = subprocess.run([micropython(), "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("refused image size 5000"), out.stdout + out.stderr

"""What the installer flashes is what runs: a built LittleFS image boots a virtual board (issue #5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import littlefs
from integration.support import body_of

from firmware import protocol_host as protocol
from stack.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]


def provision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisioning.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_built_image_boots_sends_alarm_and_verifies(tmp_path, broker, observer):
    devices, out = tmp_path / "devices", tmp_path / "build"
    r = provision("new-device", "--devices-dir", str(devices), "--id", "img-0001", "--board", "virtual",
                  "--building", "Nhà A", "--address", "1 Tràng Tiền, Hà Nội", "--lat", "21.0245", "--lon", "105.8575",
                  "--broker-host", "127.0.0.1", "--broker-port", str(broker.port), "--no-tls", "--test-rig")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((devices / "img-0001" / "device.json").read_text())
    assert "key" not in r.stdout + r.stderr or cfg["key"] not in r.stdout + r.stderr
    broker.add_user("img-0001", cfg["mqtt"]["password"])
    broker.reload()
    r = provision("build", "--devices-dir", str(devices), "--device", "img-0001", "--out", str(out))
    assert r.returncode == 0, r.stderr
    image = out / "fs.img"

    # the image holds compiled modules, not sources (main.py excepted), so the board runs the .mpy
    data = image.read_bytes()
    fs = littlefs.LittleFS(block_size=4096, block_count=len(data) // 4096, read_size=32, prog_size=32, lookahead_size=32, mount=False)
    fs.context.buffer[:] = data
    fs.mount()
    names = set(fs.listdir("/")) | {"lib/" + n for n in fs.listdir("/lib")}
    assert {"lib/app.mpy", "lib/mqtt.mpy", "main.py", "device.json", "board.json"} <= names
    assert "app.py" not in names and "lib/app.py" not in names

    vb = VirtualBoard(tmp_path / "unused", image=image, log=tmp_path / "img.log")
    try:
        vb.start()
        vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 20)
        vb.request("press", ms=100)
        _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("img-0001", "event"), timeout=20)
        ev = body_of(frame)
        assert ev["type"] == "alarm" and ev["loc"]["lat"] == 21.0245 and ev["loc"]["src"] == "fixed"
        vb.console.close()  # free the port for the installer's tool
        vb.console = None
        r = provision("verify", "--port", vb.port, "--board", "virtual", "--device", "img-0001",
                      "--devices-dir", str(devices))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "PASS" in r.stdout
    finally:
        vb.stop()
    # the board wrote its state into the image file itself: the boot counter is on the "flash"
    fs2 = littlefs.LittleFS(block_size=4096, block_count=len(data) // 4096, read_size=32, prog_size=32, lookahead_size=32, mount=False)
    fs2.context.buffer[:] = image.read_bytes()
    fs2.mount()
    with fs2.open("/state/boot", "r") as f:
        assert int(f.read()) >= 1

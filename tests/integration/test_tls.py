"""TLS end to end: virtual boards and the bridge reach Mosquitto's TLS listener and check its certificate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from integration.support import TEST_USER, Observer, body_of

from firmware import protocol_host as protocol
from stack.bridge import Bridge
from stack.devices import device_config, write_device
from stack.mosquitto import Mosquitto
from stack.tls import make_ca, make_test_pki, pem_to_der
from stack.vboard import VirtualBoard

ROOT = Path(__file__).resolve().parents[2]
BRIDGE_USER = ("bridge", "bridge-tls-password")


@pytest.fixture
def pki(tmp_path):
    return make_test_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path, pki):
    b = Mosquitto(tmp_path / "broker", users={TEST_USER[0]: TEST_USER[1], BRIDGE_USER[0]: BRIDGE_USER[1]},
                  bridge_users=(TEST_USER[0], BRIDGE_USER[0]),
                  tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def tls_observer(tls_broker, pki):
    o = Observer(tls_broker, ca=pki.ca_cert)
    yield o
    o.close()


@pytest.fixture
def tls_board(tls_broker, tmp_path):
    """tls_board(dev, ca=DER bytes or None, **mqtt keys) -> a started VirtualBoard on the TLS listener."""
    boards: list[VirtualBoard] = []

    def make(dev: str, ca: bytes | None, **mqtt_keys):
        cfg = device_config(dev, tls_broker.tls_port)
        cfg["mqtt"].update({"tls": True, **mqtt_keys})
        flash = tmp_path / "flash" / dev
        flash.mkdir(parents=True)
        if ca is not None:
            cfg["mqtt"]["ca"] = "ca.der"
            (flash / "ca.der").write_bytes(ca)
        tls_broker.add_user(dev, cfg["mqtt"]["password"])
        tls_broker.reload()
        path = write_device(cfg, tmp_path / "devices" / dev)
        vb = VirtualBoard(flash, device_config=path, log=tmp_path / f"{dev}.log")
        vb.cfg = cfg
        boards.append(vb)
        vb.start()
        return vb

    yield make
    for vb in boards:
        vb.stop()


def mqtt_line(vb, state: str, timeout: float = 20):
    return vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == state, timeout)


def test_board_with_the_ca_sends_an_alarm_over_tls(tls_board, tls_observer, pki):
    vb = tls_board("tls-a-0001", pki.ca_der())
    mqtt_line(vb, "connected")
    tls_observer.wait(lambda m: m[0] == protocol.topic("tls-a-0001", "status") and b'"online"' in m[1])
    vb.request("press", ms=100)
    _, frame, _ = tls_observer.wait(lambda m: m[0] == protocol.topic("tls-a-0001", "event"))
    ev = body_of(frame)
    assert ev["type"] == "alarm" and ev["cause"] == "button" and ev["dev"] == "tls-a-0001"
    assert vb.request("status")["mqtt"] == "connected"


def test_board_accepts_the_ca_as_pem_and_checks_the_host_name(tls_board, tls_observer, pki):
    # the certificate names localhost too: connecting by that name, with a PEM CA file, works
    vb = tls_board("tls-a-0002", pki.ca_cert.read_bytes(), host="localhost")
    mqtt_line(vb, "connected")
    vb.request("press", ms=100)
    tls_observer.wait(lambda m: m[0] == protocol.topic("tls-a-0002", "event"))


def test_board_with_a_wrong_ca_never_connects_and_says_why(tls_board, tls_observer, tmp_path):
    other_ca, _ = make_ca(tmp_path / "other", cn="somebody-else")
    vb = tls_board("tls-a-0003", pem_to_der(other_ca.read_text()))
    down = mqtt_line(vb, "down")
    assert down["detail"].startswith("tls: ") and "not correctly signed by the trusted CA" in down["detail"]
    vb.request("press", ms=100)  # the alarm waits in the outbox; it must not leak to an unverified peer
    time.sleep(3)  # a negative check over several reconnect attempts (backoff starts at 0.5 s)
    assert vb.request("status")["mqtt"] != "connected"
    assert vb.console.find("mqtt", state="connected") == []
    assert tls_observer.events("tls-a-0003") == []
    assert len(vb.request("outbox")["ids"]) == 1


def test_board_refuses_a_server_name_the_certificate_does_not_carry(tls_board, pki):
    vb = tls_board("tls-a-0004", pki.ca_der(), server_hostname="broker.example.vn")
    down = mqtt_line(vb, "down")
    assert down["detail"].startswith("tls: ") and "CN" in down["detail"]


def test_tls_without_a_ca_refuses_to_connect_unchecked(tls_board, tls_observer):
    vb = tls_board("tls-a-0005", None)
    down = mqtt_line(vb, "down")
    assert down["detail"].startswith("tls: no CA certificate") and "mqtt.ca" in down["detail"]
    mark = vb.console.mark()
    vb.request("press", ms=100)  # the device still alarms locally; the alarm waits in its outbox
    vb.console.wait_for(lambda m: m.get("ev") == "indicator" and m.get("state") == "alarm", 10, since=mark)
    time.sleep(2)  # a negative check over several reconnect attempts
    assert vb.request("status")["mqtt"] != "connected" and tls_observer.events("tls-a-0005") == []


def test_tls_insecure_connects_without_a_ca_when_asked_by_name(tls_board, tls_observer):
    vb = tls_board("tls-a-0007", None, tls_insecure=True)
    mqtt_line(vb, "connected")
    vb.request("press", ms=100)
    tls_observer.wait(lambda m: m[0] == protocol.topic("tls-a-0007", "event"))


def test_bridge_over_tls_stores_and_acks_a_board_alarm(tls_board, tls_broker, pki, tmp_path):
    vb = tls_board("tls-a-0006", pki.ca_der())
    bridge = Bridge(tmp_path / "bridge", {
        "bridge_id": "tls", "db": str(tmp_path / "bridge" / "bridge.db"),
        "mqtt": {"host": tls_broker.host, "port": tls_broker.tls_port, "user": BRIDGE_USER[0],
                 "password": BRIDGE_USER[1], "tls": True, "ca_file": str(pki.ca_cert), "keepalive": 10},
        "sinks": [{"name": "intake", "type": "accept-all"}],
        "sink_types": {"accept-all": "bench.bridge_throughput:BenchSink"},
    })
    bridge.register([{**vb.cfg, "site": {"building": "Toà A", "address": "1 Tràng Tiền, Hà Nội"}}])
    bridge.start()
    try:
        mqtt_line(vb, "connected")
        mark = vb.console.mark()
        vb.request("press", ms=100)
        vb.console.wait_for(lambda m: m.get("ev") == "indicator" and m.get("state") == "stored", 15, since=mark)
        ack = vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 15, since=mark)
        assert ack["incident"] == "INC-" + ack["id"]
        assert vb.request("outbox")["ids"] == []
        logged = [json.loads(ln) for ln in bridge.log_path.read_text().splitlines() if ln.startswith("{")]
        connected = [r for r in logged if r.get("msg") == "mqtt connected"]
        assert connected and connected[0].get("port") == tls_broker.tls_port
    finally:
        bridge.stop()


def test_provisioned_image_carries_the_ca_and_connects_over_tls(tls_broker, tls_observer, pki, tmp_path):
    devices, out = tmp_path / "devices", tmp_path / "build"

    def provision(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "provisioning.cli", *args, "--devices-dir", str(devices)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    r = provision("new-device", "--id", "tls-img-01", "--board", "virtual", "--building", "Nhà A",
                  "--address", "1 Tràng Tiền, Hà Nội", "--lat", "21.0245", "--lon", "105.8575",
                  "--broker-host", "127.0.0.1", "--broker-port", str(tls_broker.tls_port),
                  "--ca-cert", str(pki.ca_cert), "--test-rig")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((devices / "tls-img-01" / "device.json").read_text())
    assert cfg["mqtt"]["tls"] is True and cfg["mqtt"]["ca"] == "ca.der"
    assert (devices / "tls-img-01" / "ca.der").read_bytes() == pki.ca_der()
    tls_broker.add_user("tls-img-01", cfg["mqtt"]["password"])
    tls_broker.reload()
    r = provision("build", "--device", "tls-img-01", "--out", str(out))
    assert r.returncode == 0, r.stderr
    vb = VirtualBoard(tmp_path / "unused", image=out / "fs.img", log=tmp_path / "img.log")
    try:
        vb.start()
        mqtt_line(vb, "connected")
        vb.request("press", ms=100)
        _, frame, _ = tls_observer.wait(lambda m: m[0] == protocol.topic("tls-img-01", "event"), timeout=20)
        assert body_of(frame)["type"] == "alarm"
    finally:
        vb.stop()

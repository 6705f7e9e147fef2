"""register + broker-config: the bridge registry gets the key, and a real Mosquitto with the generated
configuration lets each device log in and publish on its own topics only."""

import json
import os
import queue
import ssl
import threading

import paho.mqtt.client as mqtt
from prov_helpers import run_cli

from firmware import protocol_host as protocol
from provisioning.acl import DEVICE_ACL
from provisioning.broker import BrokerConfig, write_broker_config
from stack.mosquitto import find_mosquitto
from stack.ports import free_port, wait_port
from stack.procs import Process
from stack.tls import make_test_pki


def test_register_adds_the_device_to_the_bridge_registry_and_broker(tmp_path, make_device, devices_dir):
    from bridge.registry import Registry

    device, _ = make_device("hn-a-0001", board="esp32-panic-battery")
    r = run_cli("register", "--devices-dir", str(devices_dir), "--device", "hn-a-0001",
                "--db", str(tmp_path / "bridge.db"), "--passwd-file", str(tmp_path / "passwd"),
                "--acl-file", str(tmp_path / "acl"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert device["key"] not in r.stdout + r.stderr and device["mqtt"]["password"] not in r.stdout + r.stderr
    reg = Registry(tmp_path / "bridge.db")
    try:
        dev = reg.get("hn-a-0001")
        assert dev.key == bytes.fromhex(device["key"])
        assert (dev.building, dev.floor, dev.room) == ("Toà A", "3", "301")
        # the address in the 2025 units, with the official codes 114 routes by
        assert (dev.address, dev.ward, dev.province) == ("1 Tràng Tiền, Phường Hoàn Kiếm, Thành phố Hà Nội",
                                                         "Phường Hoàn Kiếm", "Thành phố Hà Nội")
        assert (dev.ward_code, dev.province_code) == ("00070", "01")
        assert (dev.lat, dev.lon, dev.supervision) == (21.028511, 105.804817, "battery")
    finally:
        reg.close()
    lines = (tmp_path / "passwd").read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["hn-a-0001"]
    assert device["mqtt"]["password"] not in (tmp_path / "passwd").read_text()  # hashed
    assert DEVICE_ACL in (tmp_path / "acl").read_text()
    # again: an update, not a second entry
    r = run_cli("register", "--devices-dir", str(devices_dir), "--device", "hn-a-0001",
                "--db", str(tmp_path / "bridge.db"), "--passwd-file", str(tmp_path / "passwd"),
                "--acl-file", str(tmp_path / "acl"), cwd=tmp_path)
    assert r.returncode == 0 and "already has the device patterns" in r.stdout
    assert len((tmp_path / "passwd").read_text().splitlines()) == 1
    assert (tmp_path / "acl").read_text().count("pattern write " + protocol.topic("%u", "event")) == 1


def test_broker_config_command_writes_a_complete_configuration(tmp_path):
    r = run_cli("broker-config", "--out", "broker", "--cafile", "/etc/ssl/ca.crt", "--certfile", "/etc/ssl/s.crt",
                "--keyfile", "/etc/ssl/s.key", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text().splitlines()
    for line in ("allow_anonymous false", "listener 8883", "cafile /etc/ssl/ca.crt", "certfile /etc/ssl/s.crt",
                 "keyfile /etc/ssl/s.key", "persistence true", "listener 1883 127.0.0.1"):
        assert line in conf
    assert f"password_file {tmp_path / 'broker' / 'passwd'}" in conf
    acl = (tmp_path / "broker" / "acl").read_text()
    assert DEVICE_ACL in acl and "user bridge" in acl
    secret = (tmp_path / "broker" / "bridge-password").read_text().strip()
    assert secret and secret not in r.stdout
    assert os.stat(tmp_path / "broker" / "bridge-password").st_mode & 0o077 == 0
    if os.geteuid() != 0:
        assert "sudo chown mosquitto:mosquitto" in r.stdout


def _client(name, password, port, ca):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    c.username_pw_set(name, password)
    c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    return c


def _connect(c, port):
    result = queue.Queue()
    c.on_connect = lambda cl, ud, flags, rc, props: result.put(rc)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        return result.get(timeout=10)
    except queue.Empty:
        return None


def test_generated_broker_lets_devices_publish_only_on_their_own_topics(tmp_path, make_device, devices_dir):
    pki = make_test_pki(tmp_path / "pki")
    ca, cert, key = pki.ca_cert, pki.server_cert, pki.server_key
    tls_port, local_port = free_port(), free_port()
    broker_dir = tmp_path / "broker"
    write_broker_config(BrokerConfig(
        out_dir=broker_dir, cafile=str(ca), certfile=str(cert), keyfile=str(key), tls_port=tls_port,
        bind_address="127.0.0.1", local_port=local_port, persistence_location=str(tmp_path / "data") + "/",
        log_dest=f"file {tmp_path / 'mosquitto.log'}", run_as="root" if os.geteuid() == 0 else None))
    (tmp_path / "data").mkdir()
    for dev in ("hn-a-0001", "hn-a-0002"):
        make_device(dev)
        r = run_cli("register", "--devices-dir", str(devices_dir), "--device", dev, "--no-registry",
                    "--broker-dir", str(broker_dir), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    dev1 = json.loads((devices_dir / "hn-a-0001" / "device.json").read_text())
    bridge_pw = (broker_dir / "bridge-password").read_text().strip()

    broker = Process([find_mosquitto(), "-c", str(broker_dir / "mosquitto.conf")], name="mosquitto",
                     log=tmp_path / "mosquitto.stderr")
    broker.start()
    clients = []
    try:
        wait_port("127.0.0.1", tls_port, 10)
        got = queue.Queue()
        bridge = _client("bridge", bridge_pw, tls_port, ca)
        clients.append(bridge)
        bridge.on_message = lambda cl, ud, msg: got.put((msg.topic, msg.payload))
        assert _connect(bridge, tls_port) == 0
        subscribed = threading.Event()
        bridge.on_subscribe = lambda *a: subscribed.set()
        bridge.subscribe(protocol.every("event"), qos=1)
        assert subscribed.wait(5), "the bridge's subscription was not acknowledged"

        device = _client("hn-a-0001", dev1["mqtt"]["password"], tls_port, ca)
        clients.append(device)
        assert _connect(device, tls_port) == 0
        device.publish(protocol.topic("hn-a-0002", "event"), b"spoofed", qos=1).wait_for_publish(5)
        device.publish(protocol.topic("hn-a-0001", "event"), b"mine", qos=1).wait_for_publish(5)
        assert got.get(timeout=5) == (protocol.topic("hn-a-0001", "event"), b"mine")  # the spoof never arrived first
        assert got.empty()

        intruder = _client("hn-a-0001", "wrong-password", tls_port, ca)
        clients.append(intruder)
        rc = _connect(intruder, tls_port)
        assert rc is not None and rc != 0  # refused
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        broker.stop()


def test_our_password_hash_is_mosquittos_own(tmp_path):
    """The file is written by stack/passwd.py, not by `mosquitto_passwd -b` (whose argv shows the
    password to every user of the host); a line its tool wrote verifies with our check, and ours
    has its shape. A real broker accepting ours is shown by every broker test."""
    import shutil
    import subprocess

    from stack.passwd import check_password, hash_password, read_users

    tool = shutil.which("mosquitto_passwd")
    if tool:
        pw = tmp_path / "theirs"
        pw.write_text("")
        subprocess.run([tool, "-b", str(pw), "alice", "s3cret pässword"], check=True, capture_output=True)
        theirs = read_users(pw)["alice"]
        assert check_password(theirs, "s3cret pässword") and not check_password(theirs, "s3cret")
    ours = hash_password("s3cret pässword")
    assert ours.startswith("$7$101$") and len(ours.split("$")) == 5
    assert check_password(ours, "s3cret pässword") and not check_password(ours, "other")


def test_register_never_takes_over_a_service_account_or_a_reserved_id(tmp_path, make_device, devices_dir):
    from stack.passwd import check_password, read_users, write_password_file

    passwd = tmp_path / "passwd"
    write_password_file(passwd, {"ops-monitor": "their own"})  # a service account added by hand
    make_device("ops-monitor")
    r = run_cli("register", "--devices-dir", str(devices_dir), "--device", "ops-monitor",
                "--passwd-file", str(passwd), cwd=tmp_path)
    assert r.returncode != 0 and "already there and was not added as a device" in r.stderr
    assert check_password(read_users(passwd)["ops-monitor"], "their own")  # untouched
    make_device("hn-a-0002")
    args = ("register", "--devices-dir", str(devices_dir), "--device", "hn-a-0002", "--passwd-file", str(passwd))
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    assert run_cli(*args, cwd=tmp_path).returncode == 0  # its own device: replaced, as before
    assert list(read_users(passwd)) == ["ops-monitor", "hn-a-0002"]

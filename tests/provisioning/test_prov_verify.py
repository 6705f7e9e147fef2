"""verify: against a fake device console on a pseudo-terminal that speaks the JSON-lines protocol."""

import json
import os
import threading
import tty

import pytest
from prov_helpers import run_cli

from provisioning.boards import get_board
from provisioning.verify import Expected, passed, summary_table, verify


class FakeDevice:
    """Answers docs/protocol.md §9 on the master side of a pty, with boot noise and unsolicited lines."""

    def __init__(self, dev="hn-a-0001", board="esp32-devkitc", sensors=("bme680", "gps", "smoke"),
                 connect_after=1, broker_acks=True, bridge_acks=True, fault=None, silent=False, verdict=None):
        # sensors: the names (older firmware) or {name: "ok" or what is wrong}, as status reports them
        self.dev, self.board, self.fault = dev, board, fault
        self.sensors = sensors if isinstance(sensors, dict) else list(sensors)
        self.verdict = verdict or {"indicator": "ok", "heater": "ok", "chamber": "ok", "gps": "ok", "pass": True}
        self.connect_after, self.broker_acks, self.bridge_acks, self.silent = (
            connect_after, broker_acks, bridge_acks, silent)
        self.status_calls = 0
        self.requests = []
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # as a board's console: no echo of our own lines back to us
        self.port = os.ttyname(self.slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def send(self, obj):
        os.write(self.master, (json.dumps(obj) + "\r\n").encode())

    def _reply(self, req):
        cmd = req.get("cmd")
        base = {"re": cmd, "ok": True}
        if "tag" in req:
            base["tag"] = req["tag"]
        if cmd == "status":
            self.status_calls += 1
            # what a real console interleaves: ESP-IDF log lines, a traceback, line noise
            os.write(self.master, b"I (5123) wifi:connected with SiteWiFi\r\nTraceback (most recent call last):\r\n"
                                  b"\x00\xfe{not json\r\n[1, 2]\r\n")
            mqtt = "connected" if self.connect_after is not None and self.status_calls > self.connect_after \
                else "connecting"
            self.send(dict(base, dev=self.dev, fw="0.1.0", board=self.board, boot=1, up=1234, mqtt=mqtt,
                           net=True, sensors=self.sensors, fault=self.fault, outbox=0, heap_free=90000))
        elif cmd == "selftest":
            self.send(dict(base, started=True))
            eid = f"{self.dev}-00000001"
            self.send({"ev": "event", "id": eid, "type": "test", "cause": "selftest"})
            self.send(dict(self.verdict, ev="selftest"))
            if self.broker_acks:
                self.send({"ev": "sent", "id": eid})
            if self.bridge_acks:
                self.send({"ev": "ack", "id": eid, "stage": "stored"})
        else:
            self.send({"re": cmd, "ok": False, "error": "unknown command"})

    def _run(self):
        os.write(self.master, b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET),boot:0x13\r\n\x00\xff\r\n")
        self.send({"ev": "boot", "dev": self.dev, "fw": "0.1.0", "board": self.board, "boot": 1})
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = os.read(self.master, 1024)
            except OSError:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    req = json.loads(line)
                except ValueError:
                    continue
                self.requests.append(req)
                if not self.silent:
                    try:
                        self._reply(req)
                    except OSError:  # the test closed the pty
                        return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        os.close(self.slave)
        os.close(self.master)
        self._thread.join(2)


def exp(dev="hn-a-0001", board="esp32-devkitc"):
    return Expected(dev=dev, board=get_board(board))


def names(checks, ok):
    return [c.name for c in checks if c.ok == ok]


def test_a_good_device_passes_every_check():
    with FakeDevice() as fake:
        checks = verify(fake.port, exp(), net_timeout=5, test_timeout=3, bridge=True, bridge_timeout=3)
    assert passed(checks), summary_table(checks)
    assert names(checks, True) == ["console", "device id", "firmware", "board", "sensors", "no fault",
                                   "network + broker", "self-test", "broker accepted", "bridge stored"]
    assert "PASS: the device is ready." in summary_table(checks)


def test_verify_command_prints_the_table_and_exits_zero_only_on_pass(tmp_path, make_device, devices_dir):
    make_device()
    with FakeDevice() as fake:
        r = run_cli("verify", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--port", fake.port,
                    "--net-timeout", "5", "--test-timeout", "3", cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CHECK" in r.stdout and "PASS: the device is ready." in r.stdout
    with FakeDevice(dev="hn-a-0002") as fake:
        r = run_cli("verify", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", "--port", fake.port,
                    "--net-timeout", "5", "--test-timeout", "3", cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert "this is 'hn-a-0002', expected 'hn-a-0001'" in r.stdout and "FAIL: 1 of" in r.stdout


def test_missing_sensor_and_wrong_board_fail():
    with FakeDevice(board="esp32-c3-devkitm", sensors=["bme680"]) as fake:
        checks = verify(fake.port, exp(), net_timeout=5, test_timeout=3)
    assert names(checks, False) == ["board", "sensors"]
    text = summary_table(checks)
    assert "missing: gps, smoke" in text and "expected 'esp32-devkitc'" in text


def test_broker_never_reached_fails_with_a_reason():
    with FakeDevice(connect_after=None) as fake:
        checks = verify(fake.port, exp(), net_timeout=1.5, test_timeout=2)
    assert not passed(checks)
    net = next(c for c in checks if c.name == "network + broker")
    assert not net.ok and "broker not reachable or refused the login" in net.detail


def test_broker_refusing_the_publish_fails():
    with FakeDevice(broker_acks=False) as fake:
        checks = verify(fake.port, exp(), net_timeout=5, test_timeout=1.5)
    assert names(checks, False) == ["broker accepted"]


def test_device_fault_is_shown():
    with FakeDevice(fault=["config"]) as fake:
        checks = verify(fake.port, exp(), net_timeout=5, test_timeout=2)
    assert names(checks, False) == ["no fault"]


def test_a_silent_port_fails_cleanly(tmp_path):
    with FakeDevice(silent=True) as fake:
        r = run_cli("verify", "--port", fake.port, "--reply-timeout", "1", cwd=tmp_path, timeout=60)
    assert r.returncode == 1
    assert "console" in r.stdout and "no reply to 'status'" in r.stdout and "Traceback" not in r.stderr


def test_missing_port(tmp_path):
    r = run_cli("verify", "--port", "/dev/ttyUSB98", cwd=tmp_path)
    assert r.returncode == 1 and "serial port /dev/ttyUSB98 not found" in r.stderr


@pytest.mark.parametrize("board", ["esp32-panic-battery"])
def test_board_without_sensors_passes_without_them(board):
    with FakeDevice(board=board, sensors=[]) as fake:
        checks = verify(fake.port, exp(board=board), net_timeout=5, test_timeout=2)
    assert passed(checks), summary_table(checks)


def test_a_fitted_sensor_in_fault_fails_with_what_is_wrong():
    sensors = {"bme680": "ok", "gps": "gps receiver silent", "smoke": "smoke ADC read failed (EIO)"}
    with FakeDevice(sensors=sensors) as fake:
        checks = verify(fake.port, exp(), net_timeout=5, test_timeout=2)
    assert names(checks, False) == ["sensors"]
    detail = next(c.detail for c in checks if c.name == "sensors")
    assert "gps: gps receiver silent" in detail and "smoke: smoke ADC read failed (EIO)" in detail
    assert "bme680" not in detail


def test_a_failed_self_test_names_what_failed_and_the_delivery_is_still_checked():
    verdict = {"indicator": "ok", "heater": "fail", "chamber": "ok", "gps": "fail", "ok": False, "pass": False}
    with FakeDevice(verdict=verdict) as fake:
        checks = verify(fake.port, exp(), net_timeout=5, test_timeout=2, bridge=True, bridge_timeout=2)
    assert names(checks, False) == ["self-test"]
    assert next(c.detail for c in checks if c.name == "self-test") == "failed: heater, gps"
    assert {"broker accepted", "bridge stored"} <= set(names(checks, True))

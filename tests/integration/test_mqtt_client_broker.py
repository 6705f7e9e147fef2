"""The firmware's MQTT client, running inside the real MicroPython interpreter, against a real Mosquitto
and against hostile brokers written here (garbage, oversized packets, silence, refusals)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware import protocol_host as protocol
from provisioning.vboard import micropython_exe
from stack.mosquitto import Mosquitto
from stack.ports import free_port
from stack.procs import Arrivals, Process, wait_until

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "mp_mqtt_driver.py"
DEV = "mqtt-dev-1"
DEV_PW = "device-password"
BRIDGE = ("mqtt-bridge", "bridge-password")
EVENT = protocol.topic(DEV, "event")
STATUS = protocol.topic(DEV, "status")
CMD = protocol.topic(DEV, "cmd")


def micropython() -> str:
    return micropython_exe()


class Driver:
    """One MicroPython process running the client (through the harness's Process); its JSON lines
    are its events."""

    def __init__(self, port: int, **cfg):
        cfg.setdefault("client_id", DEV)
        cfg["port"] = port
        self.events: Arrivals[dict] = Arrivals()
        self._next = 0  # wait() looks only at what came after the last event it returned
        self.process = Process([micropython(), "-X", "heapsize=512K", str(DRIVER)], name="mqtt driver",
                               keep=400, on_line=self._line, stdin=True)
        self.process.start()
        self.send(**cfg)  # the config goes first, on stdin

    @property
    def proc(self) -> subprocess.Popen:
        assert self.process.proc is not None, "the driver has stopped"
        return self.process.proc

    def _line(self, text: str) -> None:
        try:
            self.events.add(json.loads(text))
        except ValueError:
            pass  # a traceback line: in the process's tail for the failure message

    def wait(self, pred, timeout: float = 10.0) -> dict:
        """The first event, since the last wait(), that satisfies pred."""
        found = self.events.first_at(pred, timeout, self._next)
        if found is None:
            raise AssertionError(f"no matching event within {timeout} s; output:\n{self.process.tail(400)}")
        self._next = found[0] + 1
        return found[1]

    def send(self, **cmd) -> None:
        self.process.write(json.dumps(cmd) + "\n")

    def stats(self) -> dict:
        self.send(cmd="stats")
        return self.wait(lambda e: e["ev"] == "stats")

    def disconnect(self) -> None:
        self.send(cmd="disconnect")
        self.wait(lambda e: e["ev"] == "end")
        self.process.wait(5)

    def kill(self) -> None:
        self.process.kill()


def up(e):
    return e["ev"] == "state" and e["up"]


def down(e):
    return e["ev"] == "state" and not e["up"]


@pytest.fixture
def drivers():
    started: list[Driver] = []

    def start(port, **cfg):
        d = Driver(port, **cfg)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def mosq(tmp_path):
    b = Mosquitto(tmp_path / "broker", users={DEV: DEV_PW, BRIDGE[0]: BRIDGE[1]}, bridge_users=(BRIDGE[0],))
    b.start()
    yield b
    b.stop()


class Bridge:
    """paho-mqtt on the bridge's side of the broker: records what arrives."""

    def __init__(self, broker: Mosquitto, topics, client_id="mqtt-test-bridge", clean=True, login=BRIDGE):
        self.msgs: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.c.username_pw_set(*login)
        self.c.reconnect_delay_set(0.1, 0.5)
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics]) if topics else None
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        if topics:
            assert subscribed.wait(10), "bridge client could not subscribe"

    def _on_message(self, c, u, m):
        with self.cond:
            self.msgs.append(m)
            self.cond.notify_all()

    def wait(self, pred, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: any(pred(m) for m in self.msgs), timeout), \
                [(m.topic, m.payload) for m in self.msgs]
            return next(m for m in self.msgs if pred(m))

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def bridges():
    made: list[Bridge] = []

    def make(*a, **kw):
        b = Bridge(*a, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def device_cfg(**kw):
    cfg = {"user": DEV, "password": DEV_PW, "keepalive": 5}
    cfg.update(kw)
    return cfg


# ---------------------------------------------------------------- against Mosquitto


def test_qos1_publish_reaches_the_bridge(mosq, drivers, bridges):
    bridge = bridges(mosq, [EVENT])
    d = drivers(mosq.port, **device_cfg())
    d.wait(up)
    d.send(cmd="publish", topic=EVENT, payload='{"id":"a-1"}', qos=1, tag="e1")
    assert d.wait(lambda e: e["ev"] == "published")["ok"] is True
    m = bridge.wait(lambda m: m.topic == EVENT)
    assert m.payload == b'{"id":"a-1"}' and m.qos == 1


def test_retained_birth_then_will_when_the_device_dies(mosq, drivers, bridges):
    d = drivers(mosq.port, **device_cfg(
        will=[STATUS, '{"v":1,"state":"offline"}', 1, True], birth=[STATUS, '{"v":1,"state":"online"}']))
    assert d.wait(lambda e: e["ev"] == "birth")["ok"] is True
    bridge = bridges(mosq, [STATUS])  # subscribes after the birth: it must arrive as retained
    m = bridge.wait(lambda m: m.topic == STATUS)
    assert m.payload == b'{"v":1,"state":"online"}' and m.retain
    d.proc.send_signal(signal.SIGKILL)  # power cut: no DISCONNECT
    d.proc.wait(5)
    m = bridge.wait(lambda m: m.payload == b'{"v":1,"state":"offline"}')
    assert m.topic == STATUS


def test_clean_disconnect_does_not_fire_the_will(mosq, drivers, bridges):
    d = drivers(mosq.port, **device_cfg(will=[STATUS, "gone", 1, False]))
    d.wait(up)
    bridge = bridges(mosq, [STATUS])
    d.disconnect()
    # A marker published after the disconnect arrives after any will would have.
    marker = bridges(mosq, [], client_id="mqtt-test-marker", login=(DEV, DEV_PW))
    marker.c.publish(STATUS, b"marker", qos=1).wait_for_publish(5)
    bridge.wait(lambda m: m.payload == b"marker")
    assert [m.payload for m in bridge.msgs] == [b"marker"]


def test_pending_qos1_survives_a_broker_crash_and_restart(mosq, drivers, bridges):
    # The bridge holds a persistent session so that it too gets the message after the restart.
    bridge = bridges(mosq, [EVENT], client_id="mqtt-test-persistent", clean=False)
    d = drivers(mosq.port, **device_cfg(keepalive=30))
    d.wait(up)
    time.sleep(1.5)  # past the broker's 1 s autosave, so the bridge's subscription is on disk
    mosq.proc.send_signal(signal.SIGSTOP)  # frozen: the PUBLISH is written but never acknowledged
    try:
        d.send(cmd="publish", topic=EVENT, payload='{"id":"pending"}', qos=1, tag="p")
        time.sleep(0.5)  # a deliberate gap: the PUBLISH reaches the frozen broker, which cannot answer
    finally:
        mosq.proc.send_signal(signal.SIGKILL)
        mosq.proc.wait(5)
    mosq.stop()
    d.wait(down)
    mosq.start()
    assert d.wait(lambda e: e["ev"] == "published", 20)["ok"] is True
    m = bridge.wait(lambda m: m.payload == b'{"id":"pending"}', 20)
    assert m.topic == EVENT
    assert all(x.payload == b'{"id":"pending"}' for x in bridge.msgs)  # at least once, nothing else
    assert d.stats()["retransmits"] >= 1


def test_persistent_session_delivers_what_came_while_offline(mosq, drivers, bridges):
    d = drivers(mosq.port, **device_cfg(subscribe=[[CMD, 1]]))
    d.wait(up)
    sender = bridges(mosq, [], client_id="mqtt-test-sender")

    def probe_arrives() -> bool:  # the subscription is in place, so the session holds it
        sender.c.publish(CMD, b'{"cmd":"probe"}', qos=1).wait_for_publish(5)
        try:
            d.wait(lambda e: e["ev"] == "msg" and e["payload"] == '{"cmd":"probe"}', timeout=0.5)
            return True
        except AssertionError:
            return False

    wait_until(probe_arrives, 10, 0, what="the device's subscription in place")
    d.disconnect()
    sender.c.publish(CMD, b'{"cmd":"identify"}', qos=1).wait_for_publish(5)
    d2 = drivers(mosq.port, **device_cfg(subscribe=[[CMD, 1]]))
    # a probe still in flight at the disconnect may come first: what matters is the command
    m = d2.wait(lambda e: e["ev"] == "msg" and e["payload"] == '{"cmd":"identify"}')
    assert m["topic"] == CMD


# ---------------------------------------------------------------- hostile brokers


def read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    """One MQTT packet (first byte, body), read independently of the firmware codec; None at EOF."""
    first = sock.recv(1)
    if not first:
        return None
    n = shift = 0
    while True:
        b = sock.recv(1)
        if not b:
            return None
        n |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None
        body += chunk
    return first[0], body


CONNACK_OK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"


class HostileBroker:
    """Accepts connections on a loopback port; behaviour(n, sock, broker) scripts the n-th one."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.port = free_port()
        self.srv = socket.create_server(("127.0.0.1", self.port))
        self.srv.settimeout(0.2)
        self.conns = 0
        self.pings = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                sock, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            n = self.conns
            self.conns += 1
            threading.Thread(target=self._run, args=(n, sock), daemon=True).start()

    def _run(self, n, sock):
        sock.settimeout(15)
        try:
            self.behaviour(n, sock, self)
        except OSError:
            pass
        finally:
            sock.close()

    def serve_normally(self, sock):
        """Acknowledge CONNECT, answer PINGREQ and QoS 1 PUBLISH, until the client leaves."""
        while True:
            p = read_packet(sock)
            if p is None or p[0] == 0xE0:
                return
            if p[0] == 0x10:
                sock.sendall(CONNACK_OK)
            elif p[0] == 0xC0:
                self.pings += 1
                sock.sendall(PINGRESP)
            elif p[0] & 0xF0 == 0x30 and p[0] & 0x06 == 0x02:
                tlen = int.from_bytes(p[1][:2], "big")
                sock.sendall(b"\x40\x02" + p[1][2 + tlen:4 + tlen])

    def close(self):
        self.closing = True
        self.srv.close()


@pytest.fixture
def hostile():
    made: list[HostileBroker] = []

    def make(behaviour):
        b = HostileBroker(behaviour)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def first_then_normal(first):
    def behaviour(n, sock, broker):
        if n == 0:
            assert read_packet(sock)[0] == 0x10
            first(sock, broker)
            sock.settimeout(3)
            while read_packet(sock) is not None:  # until the client hangs up
                pass
        else:
            broker.serve_normally(sock)
    return behaviour


def test_garbage_bytes_drop_the_connection_and_the_client_reconnects(hostile, drivers):
    b = hostile(first_then_normal(lambda s, br: s.sendall(CONNACK_OK + b"\x00\x05garbage-bytes")))
    d = drivers(b.port, keepalive=5)
    d.wait(up)
    assert "malformed" in d.wait(down)["detail"]
    d.wait(up)
    d.send(cmd="publish", topic="t", payload="after", qos=1)
    assert d.wait(lambda e: e["ev"] == "published")["ok"] is True
    s = d.stats()
    assert s["dropped_malformed"] == 1 and s["connects"] == 2


def test_oversized_remaining_length_is_refused(hostile, drivers):
    # a PUBLISH announcing 268,435,455 bytes (the largest MQTT length), then a trickle of body
    b = hostile(first_then_normal(lambda s, br: s.sendall(CONNACK_OK + b"\x30\xff\xff\xff\x7f" + b"x" * 100)))
    d = drivers(b.port, keepalive=5, max_packet=4096)
    d.wait(up)
    assert "malformed" in d.wait(down)["detail"]
    d.wait(up)
    s = d.stats()
    assert s["dropped_oversize"] == 1 and s["connected"] is True


def test_broker_that_stops_answering_is_detected_by_keepalive(hostile, drivers):
    def silent(sock, broker):
        sock.sendall(CONNACK_OK)
        sock.settimeout(10)
        while (p := read_packet(sock)) is not None:  # a half-open link: PINGREQs go unanswered
            broker.pings += p[0] == 0xC0

    b = hostile(first_then_normal(silent))
    keepalive = 2
    d = drivers(b.port, keepalive=keepalive)
    d.wait(up)
    lost = d.wait(down, timeout=2 * keepalive + 1)
    assert "nothing from the broker" in lost["detail"]
    d.wait(up, timeout=5)
    assert b.pings >= 1
    assert d.stats()["keepalive_timeouts"] == 1


def test_connack_refusal_backs_off_and_retries(hostile, drivers):
    def behaviour(n, sock, broker):
        if n < 3:
            assert read_packet(sock)[0] == 0x10
            sock.sendall(b"\x20\x02\x00\x04")  # bad user name or password
            return
        broker.serve_normally(sock)

    b = hostile(behaviour)
    d = drivers(b.port, keepalive=5, backoff_min_ms=100, backoff_max_ms=400)
    details = [d.wait(down)["detail"] for _ in range(3)]
    assert details == ["refused: bad user name or password"] * 3
    d.wait(up)
    s = d.stats()
    assert s["refused"] == 3 and s["connects"] == 1 and b.conns == 4

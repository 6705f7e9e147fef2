"""Simulated devices that speak the device protocol (docs/protocol.md) to a real broker.

One asyncio loop drives any number of devices, each with its own MQTT 3.1.1 connection, user,
password and signing key, so a thousand connected devices cost one thread. `SimDevice` wraps one
device in a blocking API for tests; `AsyncDevice` is the asyncio form the benchmark drives in bulk.

Also a command line: `python -m bench.loadgen relay ...` runs the bare relay the throughput benchmark
compares against (subscribe to every event, republish each payload to the sender's ack topic).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import struct
import threading
import time
from collections.abc import Callable

from firmware.protocol import PREFIX

# --- MQTT 3.1.1 packets (only what a device needs) ---
CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _s(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining(len(body)) + body


def connect_packet(client_id: str, user: str | None, password: str | None, keepalive: int, clean: bool,
                   will: tuple[str, bytes, int, bool] | None = None) -> bytes:
    flags = 0x02 if clean else 0
    payload = _s(client_id)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _s(topic) + _s(msg)
    if user is not None:
        flags |= 0x80
        payload += _s(user)
    if password is not None:
        flags |= 0x40
        payload += _s(password)
    return _packet(0x10, _s("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + payload)


def publish_packet(topic: str, payload: bytes, qos: int = 0, mid: int = 0, retain: bool = False,
                   dup: bool = False) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _s(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return _packet(first, body)


def subscribe_packet(mid: int, topics: list[tuple[str, int]]) -> bytes:
    return _packet(0x82, struct.pack("!H", mid) + b"".join(_s(t) + bytes([q]) for t, q in topics))


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    first = (await reader.readexactly(1))[0]
    mult, n = 1, 0
    while True:
        b = (await reader.readexactly(1))[0]
        n += (b & 0x7F) * mult
        if not b & 0x80:
            break
        mult <<= 7
    body = await reader.readexactly(n) if n else b""
    return first >> 4, first & 0x0F, body


def sign(key: bytes, body: bytes) -> bytes:
    return body + b"\n" + hmac.new(key, body, hashlib.sha256).hexdigest().encode()


def open_frame(key: bytes, frame: bytes) -> dict | None:
    i = frame.find(b"\n")
    if i < 0:
        return None
    body, sig = frame[:i], frame[i + 1:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest().encode(), sig):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class MqttError(RuntimeError):
    pass


class MqttConnection:
    """A minimal MQTT 3.1.1 client on asyncio streams: QoS 0/1 publish, subscribe, keepalive."""

    def __init__(self, host: str, port: int, client_id: str, user: str | None, password: str | None,
                 keepalive: int = 30, clean: bool = False, will=None,
                 on_publish: Callable[[str, bytes], None] | None = None):
        self.host, self.port = host, port
        self.client_id, self.user, self.password = client_id, user, password
        self.keepalive, self.clean, self.will = keepalive, clean, will
        self.on_publish = on_publish
        self._mid = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task] = []
        self.pinging = True
        self.closed = asyncio.Event()

    def next_mid(self) -> int:
        self._mid = self._mid % 65535 + 1
        return self._mid

    async def connect(self, timeout: float = 10.0) -> None:
        self.closed.clear()
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        self.writer.write(connect_packet(self.client_id, self.user, self.password, self.keepalive, self.clean,
                                         self.will))
        kind, _, body = await asyncio.wait_for(read_packet(self.reader), timeout)
        if kind != CONNACK or len(body) < 2 or body[1] != 0:
            self.writer.close()
            raise MqttError(f"{self.client_id}: connection refused (code {body[1] if len(body) > 1 else '?'})")
        self._tasks = [asyncio.ensure_future(self._read_loop()), asyncio.ensure_future(self._ping_loop())]

    async def _read_loop(self) -> None:
        try:
            while True:
                kind, flags, body = await read_packet(self.reader)
                if kind == PUBLISH:
                    qos = (flags >> 1) & 3
                    tlen = struct.unpack("!H", body[:2])[0]
                    topic = body[2:2 + tlen].decode()
                    pos = 2 + tlen
                    if qos:
                        mid = struct.unpack("!H", body[pos:pos + 2])[0]
                        pos += 2
                        self.writer.write(_packet(0x40, struct.pack("!H", mid)))
                    if self.on_publish:
                        self.on_publish(topic, body[pos:])
                elif kind in (PUBACK, SUBACK):
                    mid = struct.unpack("!H", body[:2])[0]
                    fut = self._waiting.pop(mid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(body[2:])
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(MqttError("connection lost"))
            self._waiting.clear()
            self.closed.set()

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.keepalive * 0.6))
            if self.pinging and self.writer is not None:
                self.writer.write(bytes([0xC0, 0]))

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future | None:
        """Queue a publish; for QoS 1 returns a future done on PUBACK."""
        if self.closed.is_set():
            raise MqttError("not connected")
        if qos == 0:
            self.writer.write(publish_packet(topic, payload, 0, 0, retain))
            return None
        mid = self.next_mid()
        fut = asyncio.get_running_loop().create_future()
        self._waiting[mid] = fut
        self.writer.write(publish_packet(topic, payload, qos, mid, retain))
        return fut

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 10.0) -> None:
        fut = self.publish_nowait(topic, payload, qos, retain)
        if fut is not None:
            await asyncio.wait_for(fut, timeout)

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10.0) -> bytes:
        mid = self.next_mid()
        fut = asyncio.get_running_loop().create_future()
        self._waiting[mid] = fut
        self.writer.write(subscribe_packet(mid, topics))
        return await asyncio.wait_for(fut, timeout)

    def _cancel_tasks(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    async def disconnect(self) -> None:
        """A clean DISCONNECT: the broker discards the last will."""
        if self.writer is not None and not self.closed.is_set():
            self.writer.write(bytes([0xE0, 0]))
            await self.writer.drain()
            self.writer.close()
        self._cancel_tasks()
        self.closed.set()

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT (the broker publishes the last will)."""
        if self.writer is not None:
            self.writer.transport.abort()
        self._cancel_tasks()
        self.closed.set()


STAGE_RANK = {"stored": 0, "forwarded": 1, "accepted": 2, "failed": 3}


class AsyncDevice:
    """One simulated device: signs events with its key, keeps unacked events in an outbox (resent on
    every connect, as the firmware does), records verified acks with their arrival times."""

    def __init__(self, dev: str, key: bytes, host: str, port: int, password: str, *,
                 keepalive: int = 30, loc: dict | None = None, board: str = "sim", fw: str = "sim-0.1",
                 raw_acks: bool = False, ctr: int = 0):
        self.dev, self.key = dev, key
        self.loc = loc or {"lat": 21.028511, "lon": 105.804817, "acc": 15, "src": "fixed", "age": 0}
        self.board, self.fw = board, fw
        self.ctr = ctr
        self.boot = 1
        self.t0 = time.monotonic()
        self.raw_acks = raw_acks
        self.acks: dict[str, list[dict]] = {}  # event id -> verified ack bodies, arrival order
        self.forged_acks = 0
        self.cmds: list[dict] = []
        self.raw: list[tuple[str, bytes, float]] = []
        self.raw_stored = self.raw_accepted = 0  # raw payloads that look like these acks (progress counts)
        self.sent_at: dict[str, float] = {}
        self.stage_at: dict[tuple[str, str], float] = {}
        self.outbox: dict[str, bytes] = {}  # event id -> frame, until acked `stored`
        self._waiters: list[tuple[str, str, asyncio.Future]] = []
        self.on_raw: Callable[[str, bytes], None] | None = None
        will = (f"{PREFIX}{dev}/status", b'{"v":1,"state":"offline"}', 1, True)
        self.conn = MqttConnection(host, port, dev, dev, password, keepalive, clean=False, will=will,
                                   on_publish=self._on_publish)

    # --- connection ---
    async def connect(self, resend: bool = True) -> None:
        await self.conn.connect()
        await self.conn.subscribe([(f"{PREFIX}{self.dev}/ack", 1), (f"{PREFIX}{self.dev}/cmd", 1)])
        birth = {"v": 1, "state": "online", "fw": self.fw, "board": self.board, "boot": self.boot,
                 "up": self.uptime(), "ts": int(time.time())}
        await self.conn.publish(f"{PREFIX}{self.dev}/status", _json(birth), qos=1, retain=True)
        if resend:
            for frame in list(self.outbox.values()):
                self.conn.publish_nowait(f"{PREFIX}{self.dev}/event", frame, qos=1)

    def uptime(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    # --- events ---
    def make_event(self, type: str = "alarm", cause: str = "button", data: dict | None = None,
                   ref: str | None = None, loc: dict | None = None, ctr: int | None = None) -> tuple[str, bytes]:
        if ctr is None:
            self.ctr += 1
            ctr = self.ctr
        eid = f"{self.dev}-{ctr:08d}"
        body = {"v": 1, "id": eid, "dev": self.dev, "ctr": ctr, "type": type, "cause": cause,
                "ts": int(time.time()), "up": self.uptime(), "boot": self.boot, "loc": loc or self.loc,
                "data": data if data is not None else {}}
        if ref:
            body["ref"] = ref
        return eid, sign(self.key, _json(body))

    def send_frame(self, eid: str, frame: bytes, keep: bool = True) -> asyncio.Future | None:
        if keep:
            self.outbox[eid] = frame
        self.sent_at.setdefault(eid, time.monotonic())
        return self.conn.publish_nowait(f"{PREFIX}{self.dev}/event", frame, qos=1)

    async def send_event(self, *args, **kw) -> str:
        eid, frame = self.make_event(*args, **kw)
        fut = self.send_frame(eid, frame)
        if fut is not None:
            await asyncio.wait_for(fut, 10)
        return eid

    async def telemetry(self, batt_pct: float | None = None, rssi: int | None = -61) -> None:
        body = {"v": 1, "dev": self.dev, "up": self.uptime(), "ts": int(time.time()), "boot": self.boot,
                "heap_free": 60000, "heap_peak": 40000, "rssi": rssi,
                "batt": None if batt_pct is None else {"v": 3.7, "pct": batt_pct}, "r": {}, "outbox": len(self.outbox)}
        await self.conn.publish(f"{PREFIX}{self.dev}/telemetry", _json(body), qos=0)

    # --- incoming ---
    def _on_publish(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        if self.on_raw is not None:
            self.on_raw(topic, payload)
        if self.raw_acks:
            # only recorded now (verified later by verify_raw), so the generator's CPU goes to sending
            self.raw.append((topic, payload, now))
            if b'"stage":"stored"' in payload:
                self.raw_stored += 1
            elif b'"stage":"accepted"' in payload:
                self.raw_accepted += 1
            return
        self._take(topic, payload, now)

    def verify_raw(self) -> None:
        """Verify and record the acks kept raw, with the times they arrived."""
        raw, self.raw = self.raw, []
        for topic, payload, at in raw:
            self._take(topic, payload, at)

    def _take(self, topic: str, payload: bytes, now: float) -> None:
        msg = open_frame(self.key, payload)
        if msg is None:
            self.forged_acks += 1
            return
        if topic.endswith("/cmd"):
            self.cmds.append(msg)
            return
        eid, stage = msg.get("id"), msg.get("stage")
        self.acks.setdefault(eid, []).append(msg)
        self.stage_at.setdefault((eid, stage), now)
        if stage in ("stored", "forwarded", "accepted", "failed"):
            self.outbox.pop(eid, None)
        for w in list(self._waiters):
            weid, wstage, fut = w
            if weid == eid and (stage == wstage or (wstage == "settled" and stage in ("accepted", "failed"))):
                if not fut.done():
                    fut.set_result(msg)
                self._waiters.remove(w)

    def stage(self, eid: str) -> str | None:
        """The furthest stage acked so far for an event."""
        stages = [a["stage"] for a in self.acks.get(eid, []) if a.get("stage") in STAGE_RANK]
        return max(stages, key=STAGE_RANK.get) if stages else None

    async def wait_stage(self, eid: str, stage: str, timeout: float = 10.0) -> dict:
        for a in self.acks.get(eid, []):
            if a.get("stage") == stage or (stage == "settled" and a.get("stage") in ("accepted", "failed")):
                return a
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((eid, stage, fut))
        return await asyncio.wait_for(fut, timeout)

    async def close(self) -> None:
        await self.conn.disconnect()

    def kill(self) -> None:
        self.conn.abort()


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class _LoopThread:
    """One background asyncio loop shared by every SimDevice of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="simdevices", daemon=True).start()
                cls._loop = loop
            return cls._loop


class SimDevice:
    """A blocking wrapper of AsyncDevice, for tests: `SimDevice(...).connect(); eid = d.alarm()`."""

    def __init__(self, dev: str, key: bytes | str, host: str, port: int, password: str, **kw):
        if isinstance(key, str):
            key = bytes.fromhex(key)
        self.loop = _LoopThread.get()
        self.a: AsyncDevice = self._run(self._make(dev, key, host, port, password, kw))

    @staticmethod
    async def _make(dev, key, host, port, password, kw):
        return AsyncDevice(dev, key, host, port, password, **kw)

    def _run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _call(self, fn, *args, **kw):
        async def wrapper():
            return fn(*args, **kw)
        return self._run(wrapper())

    @property
    def dev(self) -> str:
        return self.a.dev

    def connect(self, resend: bool = True) -> SimDevice:
        self._run(self.a.connect(resend))
        return self

    def send(self, type: str = "alarm", cause: str = "button", **kw) -> str:
        return self._run(self.a.send_event(type, cause, **kw))

    def alarm(self, cause: str = "button", **kw) -> str:
        return self.send("alarm", cause, **kw)

    def make_event(self, *args, **kw) -> tuple[str, bytes]:
        return self._call(self.a.make_event, *args, **kw)

    def send_frame(self, eid: str, frame: bytes, keep: bool = True) -> None:
        async def go():
            fut = self.a.send_frame(eid, frame, keep)
            if fut is not None:
                await asyncio.wait_for(fut, 10)
        self._run(go())

    def publish_raw(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._run(self.a.conn.publish(topic, payload, qos, retain))

    def telemetry(self, **kw) -> None:
        self._run(self.a.telemetry(**kw))

    def wait_stage(self, eid: str, stage: str, timeout: float = 10.0) -> dict:
        return self._run(self.a.wait_stage(eid, stage, timeout), timeout + 5)

    def stage(self, eid: str) -> str | None:
        return self._call(self.a.stage, eid)

    def acks(self, eid: str) -> list[dict]:
        return self._call(lambda: list(self.a.acks.get(eid, [])))

    def cmds(self) -> list[dict]:
        return self._call(lambda: list(self.a.cmds))

    def silence(self) -> None:
        """Stop all traffic, keepalive pings too, with the TCP connection left open (a half-open link)."""
        def go():
            self.a.conn.pinging = False
        self._call(go)

    def close(self) -> None:
        self._run(self.a.close())

    def kill(self) -> None:
        self._call(self.a.kill)


# --- the bare relay the benchmark compares the bridge with ---
async def relay(host: str, port: int, user: str, password: str, ready: Callable[[], None] | None = None) -> None:
    conn: MqttConnection

    def on_publish(topic: str, payload: bytes) -> None:
        dev = topic.split("/")[2]
        conn.publish_nowait(f"{PREFIX}{dev}/ack", payload, qos=1)

    conn = MqttConnection(host, port, f"relay-{user}", user, password, keepalive=60, clean=True,
                          on_publish=on_publish)
    await conn.connect()
    await conn.subscribe([(PREFIX + "+/event", 1)])
    if ready:
        ready()
    await conn.closed.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("relay", help="republish every event to its sender's ack topic")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    args = p.parse_args(argv)
    if args.verb == "relay":
        try:
            asyncio.run(relay(args.host, args.port, args.user, args.password,
                              ready=lambda: print("relay ready", flush=True)))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

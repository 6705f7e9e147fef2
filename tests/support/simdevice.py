"""Simulated devices that speak the device protocol (docs/protocol.md) to a real broker.

Built on the firmware's own MQTT packets (firmware/mqtt_codec.py) and contract (firmware/protocol.py),
so a simulated device frames, signs and reads exactly what a board does. One asyncio loop drives any
number of devices, each with its own MQTT 3.1.1 connection, user, password and signing key, so a
thousand connected devices cost one thread. `SimDevice` wraps one device in a blocking API for tests;
`AsyncDevice` is the asyncio form the throughput benchmark drives in bulk.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Callable

from firmware import mqtt_codec as mc
from firmware import protocol_host as protocol

MAX_PACKET = 1 << 20  # what this side reads; a simulated device has no small heap to protect


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
        self._pid = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._decoder = mc.Decoder(MAX_PACKET)
        self._tasks: list[asyncio.Task] = []
        self.pinging = True
        self.closed = asyncio.Event()

    def next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _packet(self) -> tuple[int, int, bytes]:
        """The next whole packet: (type, flags, body)."""
        while True:
            p = self._decoder.next()
            if p is not None:
                return p
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            self._decoder.feed(data)

    async def connect(self, timeout: float = 10.0) -> None:
        self.closed.clear()
        self._decoder = mc.Decoder(MAX_PACKET)
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        self.writer.write(mc.connect(self.client_id, self.user, self.password, self.keepalive, self.clean, self.will))
        kind, _, body = await asyncio.wait_for(self._packet(), timeout)
        code = mc.parse_connack(body)[1] if kind == mc.CONNACK else None
        if code != 0:
            self.writer.close()
            raise MqttError(f"{self.client_id}: connection refused ({mc.REFUSALS.get(code, code)})")
        self._tasks = [asyncio.ensure_future(self._read_loop()), asyncio.ensure_future(self._ping_loop())]

    async def _read_loop(self) -> None:
        try:
            while True:
                kind, flags, body = await self._packet()
                if kind == mc.PUBLISH:
                    topic, payload, qos, _retain, _dup, pid = mc.parse_publish(flags, body)
                    if qos:
                        self.writer.write(mc.puback(pid))
                    if self.on_publish:
                        self.on_publish(topic, payload)
                elif kind in (mc.PUBACK, mc.SUBACK):
                    if kind == mc.PUBACK:
                        pid, result = mc.parse_pid(body), b""
                    else:
                        pid, codes = mc.parse_suback(body)
                        result = bytes(codes)
                    fut = self._waiting.pop(pid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, mc.MalformedPacket):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(MqttError("connection lost"))
            self._waiting.clear()
            self.closed.set()

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.keepalive * 0.6))  # the keepalive period, not a wait for an event
            if self.pinging and self.writer is not None:
                self.writer.write(mc.pingreq())

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> asyncio.Future | None:
        """Queue a publish; for QoS 1 returns a future done on PUBACK."""
        if self.closed.is_set():
            raise MqttError("not connected")
        if qos == 0:
            self.writer.write(mc.publish(topic, payload, 0, retain))
            return None
        pid = self.next_pid()
        fut = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        self.writer.write(mc.publish(topic, payload, qos, retain, pid))
        return fut

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 10.0) -> None:
        fut = self.publish_nowait(topic, payload, qos, retain)
        if fut is not None:
            await asyncio.wait_for(fut, timeout)

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10.0) -> bytes:
        pid = self.next_pid()
        fut = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        self.writer.write(mc.subscribe(pid, topics))
        return await asyncio.wait_for(fut, timeout)

    def _cancel_tasks(self) -> None:
        for t in self._tasks:
            t.cancel()
        self._tasks = []

    async def disconnect(self) -> None:
        """A clean DISCONNECT: the broker discards the last will."""
        if self.writer is not None and not self.closed.is_set():
            self.writer.write(mc.disconnect())
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
        self.outbox: dict[str, bytes] = {}  # event id -> frame, until the bridge holds it durably
        self._waiters: list[tuple[str, str, asyncio.Future]] = []
        self.on_raw: Callable[[str, bytes], None] | None = None
        will = (protocol.topic(dev, "status"), protocol.dumps(protocol.OFFLINE), 1, True)
        self.conn = MqttConnection(host, port, dev, dev, password, keepalive, clean=False, will=will,
                                   on_publish=self._on_publish)

    def hexmac(self, body: bytes) -> str:
        return hmac.new(self.key, body, hashlib.sha256).hexdigest()

    # --- connection ---
    async def connect(self, resend: bool = True) -> None:
        await self.conn.connect()
        await self.conn.subscribe([(protocol.topic(self.dev, "ack"), 1), (protocol.topic(self.dev, "cmd"), 1)])
        birth = protocol.birth_body(self.fw, self.board, self.boot, self.uptime(), int(time.time()))
        await self.conn.publish(protocol.topic(self.dev, "status"), protocol.dumps(birth), qos=1, retain=True)
        if resend:
            for frame in list(self.outbox.values()):
                self.conn.publish_nowait(protocol.topic(self.dev, "event"), frame, qos=1)

    def uptime(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)

    # --- events ---
    def make_event(self, type: str = "alarm", cause: str = "button", data: dict | None = None,
                   ref: str | None = None, loc: dict | None = None, ctr: int | None = None) -> tuple[str, bytes]:
        if ctr is None:
            self.ctr += 1
            ctr = self.ctr
        body = protocol.event_body(self.dev, ctr, type, cause, int(time.time()), self.uptime(), self.boot,
                                   loc or self.loc, data, ref)
        return body["id"], bytes(protocol.frame(protocol.dumps(body), self.hexmac))

    def send_frame(self, eid: str, frame: bytes, keep: bool = True) -> asyncio.Future | None:
        if keep:
            self.outbox[eid] = frame
        self.sent_at.setdefault(eid, time.monotonic())
        return self.conn.publish_nowait(protocol.topic(self.dev, "event"), frame, qos=1)

    async def send_event(self, *args, **kw) -> str:
        eid, frame = self.make_event(*args, **kw)
        fut = self.send_frame(eid, frame)
        if fut is not None:
            await asyncio.wait_for(fut, 10)
        return eid

    async def telemetry(self, batt_pct: float | None = None, rssi: int | None = -61) -> None:
        body = {"v": protocol.VERSION, "dev": self.dev, "up": self.uptime(), "ts": int(time.time()),
                "boot": self.boot, "heap_free": 60000, "heap_peak": 40000, "rssi": rssi,
                "batt": None if batt_pct is None else {"v": 3.7, "pct": batt_pct}, "r": {}, "outbox": len(self.outbox)}
        await self.conn.publish(protocol.topic(self.dev, "telemetry"), protocol.dumps(body), qos=0)

    # --- incoming ---
    def _on_publish(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        if self.on_raw is not None:
            self.on_raw(topic, payload)
        if self.raw_acks:
            # only recorded now (verified later by verify_raw), so the generator's CPU goes to sending;
            # the byte tests are progress counts only, the verified stages come from verify_raw
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
        try:
            msg = protocol.check_message(protocol.open_frame(payload, self.hexmac))
        except protocol.Refused:
            self.forged_acks += 1
            return
        if topic.endswith("/cmd"):
            self.cmds.append(msg)
            return
        eid, stage = msg.get("id"), msg.get("stage")
        self.acks.setdefault(eid, []).append(msg)
        self.stage_at.setdefault((eid, stage), now)
        if protocol.durable(stage):
            self.outbox.pop(eid, None)
        for w in list(self._waiters):
            weid, wstage, fut = w
            if weid == eid and stage == wstage:
                if not fut.done():
                    fut.set_result(msg)
                self._waiters.remove(w)

    def stage(self, eid: str) -> str | None:
        """The stage a device shows for an event, from its acks in the order they came."""
        shown = None
        for a in self.acks.get(eid, []):
            if protocol.advances(a.get("stage"), shown):
                shown = a.get("stage")
        return shown

    async def wait_stage(self, eid: str, stage: str, timeout: float = 10.0) -> dict:
        for a in self.acks.get(eid, []):
            if a.get("stage") == stage:
                return a
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((eid, stage, fut))
        return await asyncio.wait_for(fut, timeout)

    async def close(self) -> None:
        await self.conn.disconnect()

    def kill(self) -> None:
        self.conn.abort()


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

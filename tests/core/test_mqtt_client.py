# The MQTT client against small scripted brokers on a loopback socket, in-process.
# Portable: runs under CPython (pytest) and MicroPython (tests/core/runner.py).
import asyncio
import sys

import broker_codec as bc
import mqtt_codec as mc
from mqtt import MQTTClient

MICROPYTHON = sys.implementation.name == "micropython"


async def until(cond, timeout_s=5.0):
    """Poll cond() until it holds; False when it never did within timeout_s."""
    for _ in range(int(timeout_s * 50)):
        if cond():
            return True
        await asyncio.sleep(0.02)
    return bool(cond())


class Peer:
    """The broker's end of one client connection."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self.dec = mc.Decoder(1 << 20)

    async def recv(self, timeout_s=5.0):
        """The next packet (type, flags, body), or None on timeout or end of stream."""
        try:
            return await asyncio.wait_for(self._recv(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def _recv(self):
        while True:
            p = self.dec.next()
            if p is not None:
                return p
            data = await self.r.read(1024)
            if not data:
                return None
            self.dec.feed(data)

    async def send(self, data):
        self.w.write(data)
        await self.w.drain()

    async def accept(self, session_present=False, code=0):
        """Read CONNECT, answer CONNACK; returns the parsed CONNECT."""
        p = await self.recv()
        assert p is not None and p[0] == bc.CONNECT, p
        await self.send(bc.connack(session_present, code))
        return bc.parse_connect(p[2])

    async def serve(self, broker, ack=True):
        """Behave like a normal broker until the client goes away or sends DISCONNECT."""
        while True:
            p = await self.recv(30)
            if p is None:
                return
            ptype, flags, body = p
            if ptype == mc.PUBLISH:
                msg = mc.parse_publish(flags, body)
                broker.published.append(msg)
                if msg[2] == 1 and ack:
                    await self.send(mc.puback(msg[5]))
            elif ptype == bc.SUBSCRIBE:
                pid, topics = bc.parse_subscribe(body)
                broker.subscribed.append(topics)
                await self.send(bc.suback(pid, [q for _, q in topics]))
            elif ptype == bc.PINGREQ:
                broker.pings += 1
                await self.send(bc.pingresp())
            elif ptype == bc.DISCONNECT:
                broker.disconnects += 1
                return
            else:
                broker.other.append(p)


class FakeBroker:
    """Runs script(peer, n, broker) for the n-th connection (0-based), then closes it."""

    def __init__(self, script):
        self.script = script
        self.conns = 0
        self.connects = []
        self.published = []
        self.subscribed = []
        self.other = []
        self.pings = 0
        self.disconnects = 0
        self.errors = []
        self.srv = None
        self.port = 0

    async def start(self):
        if MICROPYTHON:
            # No getsockname on this server object: try ports until one binds.
            from random import randint

            for _ in range(50):
                port = randint(20000, 60000)
                try:
                    self.srv = await asyncio.start_server(self._handle, "127.0.0.1", port)
                    self.port = port
                    return self
                except OSError:
                    pass
            raise OSError("no free port")
        self.srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.srv.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader, writer):
        n = self.conns
        self.conns += 1
        peer = Peer(reader, writer)
        try:
            await self.script(peer, n, self)
        except Exception as e:
            self.errors.append(repr(e))
        try:
            writer.close()
            await writer.wait_closed()
        except Exception:
            pass

    async def stop(self):
        self.srv.close()
        try:
            await asyncio.wait_for(self.srv.wait_closed(), 1)
        except Exception:
            pass


async def normal(peer, n, broker):
    broker.connects.append(await peer.accept())
    await peer.serve(broker)


def client(broker, **kw):
    kw.setdefault("backoff_min_ms", 20)
    kw.setdefault("backoff_max_ms", 100)
    kw.setdefault("keepalive", 30)
    return MQTTClient("dev-1", "127.0.0.1", broker.port, **kw)


async def start(broker_script, **kw):
    broker = await FakeBroker(broker_script).start()
    c = client(broker, **kw)
    task = asyncio.create_task(c.run())
    return broker, c, task


async def finish(broker, c, task):
    await asyncio.wait_for(c.disconnect(), 5)
    await asyncio.wait_for(task, 5)
    await broker.stop()


async def test_connect_publish_and_clean_disconnect():
    states = []
    broker, c, task = await start(
        normal, user="dev-1", password="pw", will=("s/dev-1", b"offline", 1, True),
        on_state=lambda up, detail: states.append((up, detail)),
    )
    try:
        assert await until(lambda: c.connected)
        assert states[-1] == (True, "connected")
        cn = broker.connects[0]
        assert cn["client_id"] == "dev-1" and cn["user"] == "dev-1" and cn["password"] == b"pw"
        assert cn["clean"] is False and cn["keepalive"] == 30
        assert cn["will"] == ("s/dev-1", b"offline", 1, True)
        assert await c.publish("e/dev-1", b"alarm", qos=1) is True
        assert await c.publish("t/dev-1", b"reading", qos=0) is True
        assert await until(lambda: len(broker.published) == 2)
        assert broker.published[0] == ("e/dev-1", b"alarm", 1, False, False, broker.published[0][5])
        assert broker.published[1] == ("t/dev-1", b"reading", 0, False, False, 0)
        assert c.stats["connects"] == 1 and c.stats["acked"] == 1
    finally:
        await finish(broker, c, task)
    assert broker.disconnects == 1  # a clean DISCONNECT: the broker does not publish the will
    assert not c.connected
    assert states[-1][0] is False


async def test_qos0_is_dropped_while_not_connected():
    c = MQTTClient("dev-1", "127.0.0.1", 1)
    assert await c.publish("t/dev-1", b"x", qos=0) is False
    assert c.stats["dropped_qos0"] == 1


async def test_subscriptions_and_incoming_messages():
    got = []

    async def script(peer, n, broker):
        broker.connects.append(await peer.accept())
        p = await peer.recv()
        assert p[0] == bc.SUBSCRIBE
        pid, topics = bc.parse_subscribe(p[2])
        broker.subscribed.append(topics)
        await peer.send(bc.suback(pid, [1, 0x80]))
        await peer.send(mc.publish("a/dev-1", b"first", 1, False, 77))
        p = await peer.recv()
        broker.other.append(("after first", p))
        # redelivery of the same message: the client passes it on again and acks it again
        await peer.send(mc.publish("a/dev-1", b"first", 1, False, 77, dup=True))
        broker.other.append(("after dup", await peer.recv()))
        await peer.send(mc.publish("c/dev-1", b"kept", 0, True))
        # QoS 2 (never asked for) is answered minimally: PUBREC, then PUBCOMP for the PUBREL
        await peer.send(mc.publish("c/dev-1", b"two", 2, False, 5))
        broker.other.append(("after qos2", await peer.recv()))
        await peer.send(bc.pubrel(5))
        broker.other.append(("after pubrel", await peer.recv()))
        await peer.serve(broker)

    c = None
    broker = await FakeBroker(script).start()
    c = client(broker, on_message=lambda t, p, r: got.append((t, p, r)))
    c.subscribe("a/dev-1", 1)
    c.subscribe("c/dev-1", 0)
    task = asyncio.create_task(c.run())
    try:
        assert await until(lambda: len(got) == 4)
        assert await until(lambda: len(broker.other) == 4)
    finally:
        await finish(broker, c, task)
    assert broker.errors == []
    assert broker.subscribed[0] == [("a/dev-1", 1), ("c/dev-1", 0)]
    assert got == [("a/dev-1", b"first", False), ("a/dev-1", b"first", False),
                   ("c/dev-1", b"kept", True), ("c/dev-1", b"two", False)]
    answers = dict(broker.other)
    assert answers["after first"] == (mc.PUBACK, 0, b"\x00\x4d")
    assert answers["after dup"] == (mc.PUBACK, 0, b"\x00\x4d")
    assert answers["after qos2"] == (bc.PUBREC, 0, b"\x00\x05")
    assert answers["after pubrel"] == (bc.PUBCOMP, 0, b"\x00\x05")
    assert c.stats["sub_refused"] == 1


async def test_unacked_publish_is_resent_with_dup_after_reconnect():
    async def script(peer, n, broker):
        broker.connects.append(await peer.accept(session_present=n > 0))
        if n == 0:
            p = await peer.recv()
            while p[0] != mc.PUBLISH:
                p = await peer.recv()
            # the PUBLISH arrived; the connection dies before PUBACK
            broker.published.append(mc.parse_publish(p[1], p[2]))
            return
        await peer.serve(broker)

    broker, c, task = await start(script)
    try:
        c.subscribe("a/dev-1")
        assert await asyncio.wait_for(c.publish("e/dev-1", b"alarm-17", qos=1), 5) is True
        first, again = broker.published[0], broker.published[1]
        assert first[:5] == ("e/dev-1", b"alarm-17", 1, False, False)
        assert again[:5] == ("e/dev-1", b"alarm-17", 1, False, True)  # DUP set
        assert again[5] == first[5]  # same packet id
        assert broker.subscribed == [[("a/dev-1", 1)]]  # sent again on the new connection
        assert c.stats["retransmits"] == 1 and c.stats["reconnects"] == 1
    finally:
        await finish(broker, c, task)


async def test_publish_made_while_offline_goes_out_after_connect():
    broker = await FakeBroker(normal).start()
    c = client(broker)
    pending = asyncio.create_task(c.publish("e/dev-1", b"queued", qos=1))
    await asyncio.sleep(0.05)
    assert not pending.done()
    task = asyncio.create_task(c.run())
    try:
        assert await asyncio.wait_for(pending, 5) is True
        assert broker.published[0][:5] == ("e/dev-1", b"queued", 1, False, False)  # first send: no DUP
    finally:
        await finish(broker, c, task)


async def test_inflight_window_holds_back_publishes():
    release = asyncio.Event()

    async def script(peer, n, broker):
        await peer.accept()
        held = []
        for _ in range(2):
            p = await peer.recv()
            held.append(mc.parse_publish(p[1], p[2]))
        broker.published.extend(held)
        broker.other.append(await peer.recv(0.3))  # a third must not come while two are unacked
        release.set()
        await peer.send(mc.puback(held[0][5]))
        await peer.serve(broker)

    broker, c, task = await start(script, max_inflight=2)
    try:
        results = [asyncio.create_task(c.publish("e/dev-1", b"%d" % i, qos=1)) for i in range(3)]
        assert await until(lambda: release.is_set())
        assert await until(lambda: len(broker.published) == 3)
        await asyncio.sleep(0.05)
        assert broker.other == [None]
        assert [m[1] for m in broker.published] == [b"0", b"1", b"2"]
        assert results[0].done() and await results[0] is True
        assert await until(lambda: results[2].done())
    finally:
        await finish(broker, c, task)


async def test_refused_connack_backs_off_and_retries():
    states = []

    async def script(peer, n, broker):
        if n < 2:
            await peer.accept(code=5)
            return
        await normal(peer, n, broker)

    broker, c, task = await start(script, on_state=lambda up, d: states.append((up, d)))
    try:
        assert await until(lambda: c.connected)
        assert c.stats["refused"] == 2 and c.stats["connects"] == 1 and broker.conns == 3
        assert (False, "refused: not authorized") in states
    finally:
        await finish(broker, c, task)


async def test_garbage_from_broker_drops_connection_and_client_carries_on():
    async def script(peer, n, broker):
        if n == 0:
            await peer.accept()
            await peer.send(b"\xf3\x01garbage")  # reserved type 15
            await peer.recv(2)
            return
        await normal(peer, n, broker)

    broker, c, task = await start(script)
    try:
        assert await until(lambda: broker.conns == 2 and c.connected)
        assert c.stats["dropped_malformed"] == 1
        assert await c.publish("e/dev-1", b"after", qos=1) is True
    finally:
        await finish(broker, c, task)


async def test_oversized_packet_is_refused_before_buffering():
    async def script(peer, n, broker):
        if n == 0:
            await peer.accept()
            # announces a 200 kB SUBACK, which no client can skip: the connection is dropped
            await peer.send(b"\x90" + mc.encode_length(200000) + b"\x00\x01" + b"x" * 1000)
            await peer.recv(2)
            return
        await normal(peer, n, broker)

    broker, c, task = await start(script, max_packet=4096)
    try:
        assert await until(lambda: broker.conns == 2 and c.connected)
        assert c.stats["dropped_oversize"] == 1 and c.stats["dropped_malformed"] == 1
    finally:
        await finish(broker, c, task)


async def test_an_oversized_or_unreadable_qos1_publish_is_acked_skipped_and_the_connection_kept():
    """A persistent session would send such a packet again at every reconnect, for ever: it is
    acknowledged, counted and reported once, and what follows it is read as before."""
    got, dropped = [], []
    pubacks = []

    async def script(peer, n, broker):
        await peer.accept()
        big = mc.publish("a/dev-1", b"x" * 10000, qos=1, pid=7)
        await peer.send(big[:3000])  # the first part, then the rest in pieces
        for i in range(3000, len(big), 2500):
            await peer.send(big[i:i + 2500])
        bad = bytearray(mc.publish("a/dev-1", b"y", qos=1, pid=8))
        bad[6] = ord("+")  # a wildcard in its topic: a framed PUBLISH nobody can take
        await peer.send(bytes(bad) + mc.publish("a/dev-1", b"fine", qos=1, pid=9))
        while True:
            p = await peer.recv(30)
            if p is None:
                return
            if p[0] == mc.PUBACK:
                pubacks.append(mc.parse_pid(p[2]))

    broker, c, task = await start(script, max_packet=4096,
                                  on_message=lambda t, p, r: got.append(p),
                                  on_drop=lambda why, detail: dropped.append((why, detail)))
    try:
        assert await until(lambda: pubacks == [7, 8, 9])
        assert got == [b"fine"] and broker.conns == 1
        assert dropped[0] == ("too-large", "a/dev-1: %d bytes" % len(mc.publish("a/dev-1", b"x" * 10000, 1, pid=7)))
        assert dropped[1][0] == "malformed" and len(dropped) == 2
        assert c.stats["dropped_oversize"] == 1 and c.stats["dropped_malformed"] == 1
    finally:
        await finish(broker, c, task)


async def test_silent_broker_is_detected_by_keepalive():
    async def script(peer, n, broker):
        await peer.accept()
        if n == 0:
            while await peer.recv(5) is not None:  # swallow PINGREQs without answering
                broker.pings += 1
            return
        await peer.serve(broker)

    broker, c, task = await start(script, keepalive=1)
    try:
        assert await until(lambda: broker.conns == 2 and c.connected, 6)
        assert c.stats["keepalive_timeouts"] == 1
        assert broker.pings >= 1
        assert await until(lambda: c.stats["pongs"] >= 1, 3)  # the healthy broker answers
    finally:
        await finish(broker, c, task)


class Link:
    def __init__(self, up):
        self.up = up

    def isconnected(self):
        return self.up


async def test_link_down_means_no_attempts_and_drops_the_socket():
    link = Link(False)
    states = []
    broker, c, task = await start(normal, link=link, on_state=lambda up, d: states.append((up, d)))
    try:
        await asyncio.sleep(0.3)
        assert broker.conns == 0 and states == [(False, "network down")]
        link.up = True
        assert await until(lambda: c.connected)
        link.up = False
        assert await until(lambda: not c.connected)
        assert states[-1] == (False, "network down"), states
        assert await c.publish("t/dev-1", b"x", qos=0) is False
        link.up = True
        assert await until(lambda: c.connected)
        assert broker.conns == 2
    finally:
        await finish(broker, c, task)


async def test_on_connect_runs_after_every_connack():
    births = []

    async def script(peer, n, broker):
        await peer.accept()
        if n == 0:
            await peer.recv()  # the first birth, then the line drops
            return
        await peer.serve(broker)

    broker = await FakeBroker(script).start()
    c = client(broker)

    async def birth():
        births.append(c.stats["connects"])
        await c.publish("s/dev-1", b"online", qos=1, retain=True)

    c.on_connect = birth
    task = asyncio.create_task(c.run())
    try:
        assert await until(lambda: len(births) == 2 and c.stats["acked"] >= 1)
        assert births == [1, 2]
        assert broker.published[-1][:4] == ("s/dev-1", b"online", 1, True)
    finally:
        await finish(broker, c, task)


async def test_disconnect_releases_pending_publishes():
    async def script(peer, n, broker):
        await peer.accept()
        await peer.serve(broker, ack=False)

    broker, c, task = await start(script)
    try:
        assert await until(lambda: c.connected)
        pending = asyncio.create_task(c.publish("e/dev-1", b"never acked", qos=1))
        assert await until(lambda: len(broker.published) == 1)
    finally:
        await finish(broker, c, task)
    assert await asyncio.wait_for(pending, 2) is False


async def test_subscribe_while_connected_is_sent_at_once():
    broker, c, task = await start(normal)
    try:
        assert await until(lambda: c.connected)
        c.subscribe("b/dev-1", 0)
        assert await until(lambda: broker.subscribed == [[("b/dev-1", 0)]])
    finally:
        await finish(broker, c, task)


async def test_run_survives_any_exception_and_connects_after_it():
    # Whatever escapes one connection (a network stack error on the chip, a bug) ends that attempt,
    # not the client: it is reported through on_drop("error", ...) and the client tries again.
    drops = []
    broker = await FakeBroker(normal).start()
    c = client(broker, on_drop=lambda why, detail: drops.append((why, detail)))
    real, left = c._session, [3]

    async def flaky():
        if left[0]:
            left[0] -= 1
            raise OSError("Wifi Internal Error")
        return await real()

    c._session = flaky
    task = asyncio.create_task(c.run())
    try:
        assert await until(lambda: c.connected)
        assert [d[0] for d in drops] == ["error"] * 3 and "Wifi Internal Error" in drops[0][1], drops
        assert await c.publish("e/dev-1", b"alarm", qos=1) is True
    finally:
        await finish(broker, c, task)



async def test_a_dropped_socket_wakes_its_reader_with_an_error_and_the_loop_goes_on():
    # A socket the IP stack has dropped under the event loop, as on the ESP32 after a Wi-Fi restart:
    # polling it fails (EIO), reading it says the connection is gone. Unguarded, MicroPython's shared
    # poll raises EIO out of asyncio.run and the device stops at the REPL.
    if not MICROPYTHON:  # CPython's event loop watches each descriptor alone: no shared poll to fail
        import pytest

        pytest.skip("MicroPython's asyncio polls every stream at once")
    import io

    class Dropped(io.IOBase):
        reads = 0

        def ioctl(self, req, arg):
            return -5 if req == 3 else -22  # MP_STREAM_POLL: -EIO; anything else: -EINVAL

        def readinto(self, buf):
            self.reads += 1
            raise OSError(104)  # ECONNRESET

        def read(self, n=-1):
            return self.readinto(None)

    s, errors, ticks = Dropped(), [], [0]

    async def reader():
        try:
            await asyncio.StreamReader(s).read(1)
        except OSError as e:
            errors.append(e.errno)

    async def beat():  # another task: it must keep running through the failure
        while not errors:
            ticks[0] += 1
            await asyncio.sleep_ms(2)

    b = asyncio.create_task(beat())
    await asyncio.wait_for(reader(), 2)
    await b
    assert errors == [104] and s.reads == 1 and ticks[0] > 0, (errors, s.reads, ticks)
    assert not asyncio.core._io_queue.map  # nothing left in the poll

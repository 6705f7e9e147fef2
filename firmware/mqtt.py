# MQTT 3.1.1 client for asyncio, the same code on MicroPython (ESP32, unix port) and CPython.
# Design notes, limits and the reconnection/keepalive rules: docs/mqtt-client.md.
import asyncio
from random import getrandbits

import mqtt_codec as mc
from compat import const, ticks_diff, ticks_ms

# Sleeps in whole ms: MicroPython's sleep_ms allocates nothing (a float for asyncio.sleep would).
_sleep_ms = getattr(asyncio, "sleep_ms", None) or (lambda ms: asyncio.sleep(ms / 1000))

_CHUNK = const(512)  # bytes per socket read; bounds what is buffered beyond max_packet
_TICK_MS = const(100)  # supervision period: keepalive, dead connection, link loss, disconnect request
_STABLE_MS = const(10000)  # a session that lasted this long resets the reconnect backoff
# Counters for `stats`, in a list rather than a dict of long names: the heap is small.
_STAT_NAMES = const("attempts connects reconnects refused pings pongs keepalive_timeouts dropped_malformed "
                     "dropped_oversize dropped_qos0 published acked retransmits received callback_errors sub_refused")
_S_ATTEMPTS = const(0)
_S_CONNECTS = const(1)
_S_RECONNECTS = const(2)
_S_REFUSED = const(3)
_S_PINGS = const(4)
_S_PONGS = const(5)
_S_KEEPALIVE_TIMEOUTS = const(6)
_S_DROPPED_MALFORMED = const(7)
_S_DROPPED_OVERSIZE = const(8)
_S_DROPPED_QOS0 = const(9)
_S_PUBLISHED = const(10)
_S_ACKED = const(11)
_S_RETRANSMITS = const(12)
_S_RECEIVED = const(13)
_S_CALLBACK_ERRORS = const(14)
_S_SUB_REFUSED = const(15)
_N_STATS = const(16)
# Packet types (spec 2.2.1), compiled in rather than looked up in mqtt_codec each time.
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_PUBREC = const(5)
_PUBREL = const(6)
_PUBCOMP = const(7)
_SUBACK = const(9)
_UNSUBACK = const(11)
_PINGRESP = const(13)


# MicroPython's asyncio waits on every stream in one poll; on the ESP32 a socket the IP stack has
# dropped (Wi-Fi restarted under it) makes that poll fail with EIO, and the exception ends
# asyncio.run: the device sits at the REPL until the watchdog resets it. This replaces the event
# loop's wait: on such a failure the stream whose poll fails alone is taken off and its waiters
# woken; their own read or write raises, and the client reconnects. (Named after the method it
# stands in for: a new name would cost the heap a qstr.)
def wait_io_event(dt):
    q = core._io_queue
    try:
        type(q).wait_io_event(q, dt)
    except OSError:
        import select

        for sm in list(q.map.values()):
            try:
                p = select.poll()
                p.register(sm[-1])
                p.poll(0)
            except OSError:
                q._dequeue(sm[-1])
                for t in sm[:-1]:  # [read, (pri,) write] waiters, then the stream
                    if t:
                        core._task_queue.push(t)


try:
    from asyncio import core  # type: ignore[attr-defined]  # MicroPython's event loop, in Python

    core._io_queue.wait_io_event = wait_io_event
except ImportError:  # CPython: its event loop watches each descriptor by itself
    core = None


def tls_context(cadata=None, insecure=False):
    """A client SSLContext for the broker: verified against `cadata` (one CA certificate, DER bytes),
    host name included; or, only when `insecure`, not verified at all. The same code on both
    interpreters: MicroPython's default client context checks nothing, CPython's needs a CA loaded."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is not None:
        ctx.load_verify_locations(cadata=cadata)
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # on every port; missing from the stubs
    elif insecure:
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = False  # CPython refuses CERT_NONE while this is on
        ctx.verify_mode = ssl.CERT_NONE  # type: ignore[attr-defined]
    else:
        raise ValueError("no CA certificate to check the broker with (mqtt.ca); refusing to connect unchecked")
    return ctx


class _Conn:
    """One TCP (or TLS) connection and what is known about it."""

    def __init__(self, reader, writer, max_packet):
        self.reader = reader
        self.writer = writer
        self.dec = mc.Decoder(max_packet)
        # One receive buffer for the connection's life, where the stream can fill it in place
        # (MicroPython's can; CPython's has no readinto): no fresh buffer per read on a small heap.
        self.rx = memoryview(bytearray(_CHUNK)) if hasattr(reader, "readinto") else None
        now = ticks_ms()
        self.last_rx = self.last_tx = self.last_ping = now
        self.dead = None  # reason, once the connection is known to be unusable
        self.acked = False  # CONNACK accepted: subscriptions made from now on are sent at once
        self.task = None

    async def recv(self):
        """Bytes from the broker (empty when it closed the connection); they go to the decoder."""
        if self.rx is None:
            data = await self.reader.read(_CHUNK)
        else:
            n = await self.reader.readinto(self.rx)
            data = self.rx[:n] if n else b""
        if data:
            self.last_rx = ticks_ms()
            self.dec.feed(data)
        return bool(data)

    def kill(self, reason):
        if self.dead is None:
            self.dead = reason


class _Out:
    """A QoS 1 PUBLISH waiting for its PUBACK, kept across reconnects."""

    def __init__(self, pid, pkt):
        self.pid = pid
        self.pkt = pkt  # bytearray: the DUP bit is set in place before a retransmission
        self.conn = None  # the connection it was last written to
        self.sent = False
        self.ok = None
        self.ev = asyncio.Event()


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30, clean=False,
                 will=None, ssl=False, on_message=None, on_state=None, on_connect=None, link=None,
                 max_packet=8192, max_inflight=8, backoff_min_ms=500, backoff_max_ms=30000,
                 timeout_ms=10000, cadata=None, tls_insecure=False, server_hostname=None, on_drop=None):
        self.host = host
        self.port = port
        self.keepalive = keepalive
        # ssl: False, an ssl.SSLContext used as given, or True: a context made here that checks the broker
        # against `cadata` (CA certificate, DER) or, only with tls_insecure, checks nothing.
        # With neither, every attempt fails ("tls: no CA certificate ...") before any byte is sent.
        self.ssl = ssl
        self._tls = (cadata, tls_insecure)
        self.server_hostname = server_hostname  # the name the certificate must carry; default: host
        self.on_message = on_message
        self.on_state = on_state
        self.on_connect = on_connect
        self.on_drop = on_drop  # on_drop(reason, detail): a received PUBLISH skipped (too large, malformed)
        self.link = link
        self.max_packet = max_packet
        self.max_inflight = max(1, max_inflight)
        self.backoff_min_ms = max(1, backoff_min_ms)
        self.backoff_max_ms = max(self.backoff_min_ms, backoff_max_ms)
        self.timeout_ms = timeout_ms  # TCP connect, CONNACK wait, and each socket write
        # Encoded once: it does not change between connects.
        self._connect_pkt = mc.connect(client_id, user, password, keepalive, clean, will)
        self._subs = []  # [filter, qos], in subscription order
        self._pending = []  # _Out, oldest first
        self._pid = 0
        self._conn = None
        self._up = False
        self._stop = False
        self._running = False
        self._slot = asyncio.Event()
        self._finished = asyncio.Event()
        # One writer at a time (MicroPython's stream allows one drain per socket). A flag and the
        # event below, not asyncio.Lock: its module would cost heap for this one use.
        self._writing = False
        self._idle = asyncio.Event()
        self._n = [0] * _N_STATS  # counters, indexed by the _S_* constants; `stats` names them
        self.detail = "not started"

    # ------------------------------------------------------------ public interface

    @property
    def connected(self):
        return self._up

    @property
    def stats(self):
        s = dict(zip(_STAT_NAMES.split(), self._n))
        s["inflight"] = len(self._pending)
        return s

    def subscribe(self, topic, qos=1):
        """Remembered and sent after every connect; sent now too when connected."""
        if qos not in (0, 1):
            raise ValueError("subscribe with qos 0 or 1")
        for s in self._subs:
            if s[0] == topic:
                s[1] = qos
                break
        else:
            self._subs.append([topic, qos])
        conn = self._conn
        if conn is not None and conn.acked:
            asyncio.create_task(self._write(conn, mc.subscribe(self._next_pid(), [(topic, qos)])))

    async def publish(self, topic, payload, qos=0, retain=False):
        if qos == 0:
            conn = self._conn
            if not self._up or conn is None:
                self._n[_S_DROPPED_QOS0] += 1
                return False
            ok = await self._write(conn, mc.publish(topic, payload, 0, retain))
            if ok:
                self._n[_S_PUBLISHED] += 1
            return ok
        if qos != 1:
            raise ValueError("publish with qos 0 or 1")
        while len(self._pending) >= self.max_inflight and not self._stop:
            self._slot.clear()
            await self._slot.wait()
        if self._stop:
            return False
        pid = self._next_pid()
        out = _Out(pid, mc.publish(topic, payload, 1, retain, pid))
        self._pending.append(out)
        conn = self._conn
        if self._up and conn is not None:
            await self._send_out(conn, out)
        # Otherwise the next connect sends it, in order with the others still pending.
        await out.ev.wait()
        return out.ok

    async def disconnect(self):
        """Clean DISCONNECT (the broker discards the will); run() returns. Pending QoS 1 publishes get False."""
        self._stop = True
        self._slot.set()
        if self._running:
            await self._finished.wait()
        self._release_pending()

    async def run(self):
        """Connect, serve, reconnect, until disconnect(). Never raises on broker or network trouble."""
        self._running = True
        self._stop = False
        self._finished.clear()
        attempt = 0
        link_down_told = False
        try:
            while not self._stop:
                try:
                    if not self._link_up():
                        if not link_down_told:
                            self._state(False, "network down")
                            link_down_told = True
                        await self._nap(200)
                        continue
                    link_down_told = False
                    self._n[_S_ATTEMPTS] += 1
                    up_ms = await self._session()
                    if self._stop:
                        break
                    if up_ms >= _STABLE_MS:
                        attempt = 0
                    await self._nap(self._backoff_ms(attempt))
                    attempt += 1
                except MemoryError:
                    # A heap too full even to say why (every await of a coroutine allocates):
                    # wait a little, without allocating, and go on.
                    await _sleep_ms(_TICK_MS)
                except Exception as e:  # whatever else: the client reconnects, never dies
                    self._report("error", repr(e)[:80])
                    await self._nap(self._backoff_ms(attempt))
                    attempt += 1
        finally:
            self._running = False
            self._up = False
            self._release_pending()
            self._finished.set()

    # ------------------------------------------------------------ one connection

    async def _session(self):
        """One connection from TCP connect to close; returns how long it was up (ms, 0 if never)."""
        conn = None
        up_since = None
        reason = "closed"
        try:
            kw = {}
            if self.ssl:
                kw["ssl"] = self._tls_context()
                if self.server_hostname:
                    kw["server_hostname"] = self.server_hostname
            t = self.timeout_ms / 1000
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port, **kw), t)
            conn = _Conn(reader, writer, self.max_packet)
            self._conn = conn
            if not await self._write(conn, self._connect_pkt):
                reason = conn.dead
                return 0
            ptype, _, body = await asyncio.wait_for(self._read_packet(conn), t)
            if ptype != _CONNACK:
                raise mc.MalformedPacket("expected CONNACK, got type %d" % ptype)
            _, rc = mc.parse_connack(body)
            if rc:
                self._n[_S_REFUSED] += 1
                reason = "refused: %s" % mc.REFUSALS.get(rc, "code %d" % rc)
                return 0
            up_since = ticks_ms()
            self._n[_S_CONNECTS] += 1
            if self._n[_S_CONNECTS] > 1:
                self._n[_S_RECONNECTS] += 1
            conn.task = asyncio.create_task(self._reader(conn))
            conn.acked = True  # from here on subscribe() sends by itself; no await before the snapshot
            if self._subs:
                await self._write(conn, mc.subscribe(self._next_pid(), [(s[0], s[1]) for s in self._subs]))
            await self._resend(conn)
            if conn.dead:
                reason = conn.dead
                return 0
            self._up = True
            self._state(True, "connected")
            if self.on_connect:
                asyncio.create_task(self._call_on_connect())
            reason = await self._supervise(conn)
        except asyncio.TimeoutError:
            reason = "timeout"
        except mc.MalformedPacket as e:
            self._count_malformed(e)
            reason = "malformed: %s" % e
        except Exception as e:
            reason = self._why(e)
        finally:
            self._up = False
            self._conn = None
            self._state(False, reason)  # before any await, so `connected` and on_state agree
            if conn is not None:
                conn.kill(reason)
                await self._close(conn)
        return ticks_diff(ticks_ms(), up_since) if up_since is not None else 0

    async def _resend(self, conn):
        """Write, oldest first, every pending QoS 1 publish not yet written on this connection."""
        while not conn.dead:
            out = None
            for o in self._pending:
                if o.conn is not conn:
                    out = o
                    break
            if out is None:
                return
            await self._send_out(conn, out)

    async def _supervise(self, conn):
        ka = self.keepalive * 1000
        while True:
            if self._stop:
                await self._write(conn, mc.disconnect())
                return "disconnected"
            if conn.dead:
                return conn.dead
            if not self._link_up():
                return "network down"
            if ka:
                now = ticks_ms()
                quiet = ticks_diff(now, conn.last_rx)
                if quiet > ka * 3 // 2:
                    self._n[_S_KEEPALIVE_TIMEOUTS] += 1
                    return "nothing from the broker for %d ms" % quiet
                half = ka // 2
                if ((ticks_diff(now, conn.last_tx) >= half or quiet >= half)
                        and ticks_diff(now, conn.last_ping) >= half):
                    conn.last_ping = now
                    self._n[_S_PINGS] += 1
                    await self._write(conn, mc.pingreq())
            await _sleep_ms(_TICK_MS)

    async def _reader(self, conn):
        try:
            while not conn.dead:
                p = conn.dec.next()
                if p is None:
                    if not await conn.recv():
                        conn.kill("closed by the broker")
                        return
                    continue
                if p[0] == mc.SKIPPED:
                    await self._skipped(conn, *p[1:])
                else:
                    await self._dispatch(conn, p[0], p[1], p[2])
        except mc.MalformedPacket as e:
            self._count_malformed(e)
            conn.kill("malformed: %s" % e)
        except MemoryError:
            conn.kill("out of memory")  # nothing allocated to say so: the heap is full
        except Exception as e:
            conn.kill(self._why(e))

    async def _read_packet(self, conn):
        while True:
            p = conn.dec.next()
            if p is not None:
                return p
            if not await conn.recv():
                raise OSError("closed by the broker")

    async def _skipped(self, conn, qos, pid, topic, size):
        """A PUBLISH we cannot take: acknowledged all the same (a persistent session would send it
        again at every reconnect otherwise), counted and reported; the connection goes on."""
        self._n[_S_DROPPED_OVERSIZE] += 1
        await self._ack(conn, qos, pid)
        self._report("too-large", "%s: %d bytes" % (topic[:48], size))

    async def _ack(self, conn, qos, pid):
        if qos == 1 and pid:
            await self._write(conn, mc.puback(pid))
        elif qos == 2 and pid:
            # Never subscribed for, but answered minimally so the broker's flow completes.
            await self._write(conn, mc.pubrec(pid))

    def _report(self, reason, detail):
        if self.on_drop:
            try:
                self.on_drop(reason, detail)
            except Exception:
                self._n[_S_CALLBACK_ERRORS] += 1

    async def _dispatch(self, conn, ptype, flags, body):
        if ptype == _PUBLISH:
            try:
                topic, payload, qos, retain, _dup, pid = mc.parse_publish(flags, body)
            except mc.MalformedPacket as e:  # a well-framed PUBLISH we cannot read: acked, not fatal
                self._n[_S_DROPPED_MALFORMED] += 1
                await self._ack(conn, (flags >> 1) & 3, mc.publish_pid(flags, body))
                self._report("malformed", str(e))
                return
            self._n[_S_RECEIVED] += 1
            # At least once: a redelivery (DUP) reaches on_message again; the application is idempotent.
            if self.on_message:
                try:
                    self.on_message(topic, payload, retain)
                except Exception:
                    self._n[_S_CALLBACK_ERRORS] += 1
            await self._ack(conn, qos, pid)
        elif ptype == _PUBACK:
            pid = mc.parse_pid(body)
            for i in range(len(self._pending)):
                out = self._pending[i]
                if out.pid == pid:
                    self._pending.pop(i)
                    self._n[_S_ACKED] += 1
                    out.ok = True
                    out.ev.set()
                    self._slot.set()
                    break
        elif ptype == _PUBREL:
            await self._write(conn, mc.pubcomp(mc.parse_pid(body)))
        elif ptype == _SUBACK:
            _, codes = mc.parse_suback(body)
            for c in codes:
                if c == 0x80:
                    self._n[_S_SUB_REFUSED] += 1
        elif ptype == _PINGRESP:
            self._n[_S_PONGS] += 1
        elif ptype == _PUBREC or ptype == _PUBCOMP or ptype == _UNSUBACK:
            pass  # we never publish QoS 2 nor unsubscribe: a stray answer is harmless
        else:
            raise mc.MalformedPacket("a broker does not send type %d" % ptype)

    # ------------------------------------------------------------ helpers

    async def _send_out(self, conn, out):
        if out.sent:
            out.pkt[0] |= 0x08  # DUP: same packet id, same bytes otherwise
            self._n[_S_RETRANSMITS] += 1
        else:
            self._n[_S_PUBLISHED] += 1
        out.sent = True
        out.conn = conn
        await self._write(conn, out.pkt)

    async def _write(self, conn, data):
        """Write one whole packet; False (and the connection marked dead) when that fails."""
        while self._writing:
            self._idle.clear()
            await self._idle.wait()
        self._writing = True
        try:
            if conn.dead:
                return False
            conn.writer.write(data)
            await asyncio.wait_for(conn.writer.drain(), self.timeout_ms / 1000)
            conn.last_tx = ticks_ms()
            return True
        except asyncio.TimeoutError:
            conn.kill("write timed out")
            return False
        except Exception as e:
            why = self._why(e)
            conn.kill(why if why.startswith("tls: ") else "write failed: %s" % e)
            return False
        finally:
            self._writing = False
            self._idle.set()

    async def _close(self, conn):
        if conn.task is not None:
            conn.task.cancel()
        try:
            conn.writer.close()
            await asyncio.wait_for(conn.writer.wait_closed(), 1)
        except Exception:
            pass  # already reset by the peer, or timed out: the socket is gone either way

    async def _call_on_connect(self):
        try:
            await self.on_connect()
        except Exception:
            self._n[_S_CALLBACK_ERRORS] += 1

    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            for o in self._pending:
                if o.pid == self._pid:
                    break
            else:
                return self._pid

    def _release_pending(self):
        pending, self._pending = self._pending, []
        for out in pending:
            out.ok = False
            out.ev.set()
        self._slot.set()

    def _count_malformed(self, e):
        self._n[_S_DROPPED_MALFORMED] += 1
        if isinstance(e, mc.PacketTooLarge):
            self._n[_S_DROPPED_OVERSIZE] += 1

    def _tls_context(self):
        if self.ssl is True:  # made once, on first use, and kept in its place
            self.ssl = tls_context(*self._tls)
        return self.ssl

    def _why(self, e):
        """An exception as a one-line detail; TLS failures (a certificate that does not verify, a
        handshake refused) start with "tls: " so the console says what is wrong."""
        msg = " ".join(str(e).split())  # mbedTLS wraps its messages in line feeds
        name = type(e).__name__
        if self.ssl and (name.startswith("SSL") or "MBEDTLS" in msg or "certificate" in msg.lower()
                         or isinstance(e, ValueError)):
            return "tls: %s" % (msg or name)
        return "%s: %s" % (name, msg)

    def _link_up(self):
        if self.link is None:
            return True
        try:
            return bool(self.link.isconnected())
        except Exception:
            return False

    def _state(self, connected, detail):
        self.detail = detail
        if self.on_state:
            try:
                self.on_state(connected, detail)
            except Exception:
                self._n[_S_CALLBACK_ERRORS] += 1

    def _backoff_ms(self, attempt):
        d = self.backoff_min_ms << min(attempt, 16)
        if d > self.backoff_max_ms:
            d = self.backoff_max_ms
        half = d // 2
        return half + (getrandbits(16) * (d - half) >> 16)  # jitter: uniform in [d/2, d)

    async def _nap(self, ms):
        """Sleep, but wake within one tick when disconnect() is asked for."""
        end = ticks_ms()
        while not self._stop:
            left = ms - ticks_diff(ticks_ms(), end)
            if left <= 0:
                return
            await _sleep_ms(min(left, _TICK_MS))

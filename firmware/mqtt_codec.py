# MQTT 3.1.1 packets (OASIS standard, 29 Oct 2014): pure encode/decode, no I/O.
# Runs on MicroPython and CPython alike; the client in mqtt.py builds on it. Only what a client
# sends and parses is here (the firmware carries it); the broker's half is in tests/core/broker_codec.py.

try:
    import micropython

    const = micropython.const
except ImportError:  # CPython: the host's tools and tests use this module too

    def const(x):
        return x


# Packet types (spec 2.2.1). Only those the host's tools compare against are public; the rest are
# private constants, compiled into the code: on the device a module global costs a name and a slot.
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
_PUBREL = const(6)
_SUBSCRIBE = const(8)
_UNSUBSCRIBE = const(10)
_MAX_REMAINING = const(268435455)  # four length bytes of 7 bits each (spec 2.2.3)
# Not a packet type (0 is reserved): what Decoder.next() gives for a PUBLISH over max_packet that it
# skipped: (SKIPPED, qos, packet id or 0, topic, size). The client still acknowledges it.
SKIPPED = const(0)

# CONNACK return codes (spec 3.2.2.3).
REFUSALS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

# Body sizes fixed by the spec, by packet type (255: not fixed); packets of these types with any
# other size are malformed. A bytes table stays in ROM with the code; a dict would be built in RAM.
_FIXED_BODY = b"\xff\xff\x02\xff\x02\x02\x02\x02\xff\xff\xff\x02\x00\x00\x00\xff"


class MalformedPacket(ValueError):
    pass


class PacketTooLarge(MalformedPacket):
    pass


# ---------------------------------------------------------------- encoding

def encode_length(n):
    """Remaining length as the spec's variable-length integer (1 to 4 bytes)."""
    if n < 0 or n > _MAX_REMAINING:
        raise ValueError("remaining length out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _u16(n):
    return bytes(((n >> 8) & 0xFF, n & 0xFF))


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    if len(s) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return _u16(len(s)) + s


def _packet(first, body):
    return bytes((first,)) + encode_length(len(body)) + body


def _check_pid(pid):
    if not 0 < pid <= 0xFFFF:
        raise ValueError("packet id must be 1..65535")


def connect(client_id, user=None, password=None, keepalive=30, clean=True, will=None):
    """CONNECT. will = (topic, payload bytes, qos, retain) or None."""
    flags = 0x02 if clean else 0
    tail = _str(client_id)
    if will:
        wtopic, wpayload, wqos, wretain = will
        if wqos not in (0, 1, 2):
            raise ValueError("will qos must be 0, 1 or 2")
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        tail += _str(wtopic) + _str(wpayload)
    if user is not None:
        flags |= 0x80
        tail += _str(user)
    if password is not None:
        if user is None:
            raise ValueError("a password needs a user name in MQTT 3.1.1")
        flags |= 0x40
        tail += _str(password)
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError("keepalive must be 0..65535 s")
    return _packet(0x10, b"\x00\x04MQTT\x04" + bytes((flags,)) + _u16(keepalive) + tail)


def publish(topic, payload, qos=0, retain=False, pid=0, dup=False):
    """PUBLISH as one bytearray (the client sets DUP in place on a resend); the payload is copied
    once, straight into it, so a large frame needs no intermediate copies on a small heap."""
    if qos not in (0, 1, 2):
        raise ValueError("qos must be 0, 1 or 2")
    if qos:
        _check_pid(pid)
    first = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup and qos else 0)
    t = topic.encode() if isinstance(topic, str) else topic
    if len(t) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    n = 2 + len(t) + (2 if qos else 0) + len(payload)
    head = bytes((first,)) + encode_length(n) + _u16(len(t))
    out = bytearray(len(head) + n - 2)
    out[:len(head)] = head
    i = len(head) + len(t)
    out[len(head):i] = t
    if qos:
        out[i:i + 2] = _u16(pid)
        i += 2
    out[i:] = payload
    return out


def _pid_packet(first, pid):
    _check_pid(pid)
    return bytes((first, 2)) + _u16(pid)


def puback(pid):
    return _pid_packet(0x40, pid)


def pubrec(pid):
    return _pid_packet(0x50, pid)


def pubcomp(pid):
    return _pid_packet(0x70, pid)


def subscribe(pid, topics):
    """topics: list of (filter, qos)."""
    _check_pid(pid)
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic")
    body = _u16(pid)
    for t, q in topics:
        if q not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        body += _str(t) + bytes((q,))
    return _packet(0x82, body)


def pingreq():
    return b"\xc0\x00"


def disconnect():
    return b"\xe0\x00"


# ---------------------------------------------------------------- decoding

class Decoder:
    """Cuts a byte stream into packets, whatever the chunking: feed() bytes, then call next() until None.

    next() returns (type, flags, body) and raises MalformedPacket for a bad fixed header, and
    PacketTooLarge as soon as a length header announces more than max_packet bytes in all (header
    included), before any of that body is buffered. After an error the stream is unusable. A PUBLISH
    over max_packet is not an error: once its topic and packet id are in, next() returns
    (SKIPPED, qos, pid, topic, size) and the rest of it is dropped as it arrives, so a broker's
    persistent session cannot cut the client off by sending it again and again.
    """

    def __init__(self, max_packet=8192):
        self.max_packet = max_packet
        self._buf = bytearray()
        self._pos = 0
        self._skip = 0  # bytes of a skipped PUBLISH still to come

    def feed(self, data):
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            if not data:
                return
        if self._pos:
            # Compact lazily: bytearray slices cannot be deleted in place on MicroPython.
            self._buf = self._buf[self._pos:]
            self._pos = 0
        self._buf.extend(data)

    def buffered(self):
        return len(self._buf) - self._pos

    def next(self):
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail < 2:
            return None
        first = buf[pos]
        ptype, flags = first >> 4, first & 0x0F
        _check_fixed_flags(ptype, flags)
        n = mult = 0
        i = pos + 1
        while True:
            if i - pos > 4:
                raise MalformedPacket("remaining length longer than 4 bytes")
            if i >= len(buf):
                return None
            b = buf[i]
            n += (b & 0x7F) << mult
            i += 1
            if not b & 0x80:
                break
            mult += 7
        if i - pos > 2 and buf[i - 1] == 0:
            raise MalformedPacket("remaining length not in its shortest form")
        if i - pos + n > self.max_packet:
            if ptype != PUBLISH:
                raise PacketTooLarge("packet of %d bytes over the %d limit" % (i - pos + n, self.max_packet))
            return self._skip_publish(buf, i, n, flags, i - pos + n)
        want = _FIXED_BODY[ptype]
        if want != 255 and n != want:
            raise MalformedPacket("type %d with a %d-byte body" % (ptype, n))
        if len(buf) - i < n:
            return None
        body = bytes(buf[i:i + n])
        self._pos = i + n
        if self._pos == len(buf):
            self._buf = bytearray()
            self._pos = 0
        return ptype, flags, body


    def _skip_publish(self, buf, i, n, flags, size):
        qos = (flags >> 1) & 3
        have = len(buf) - i
        if have < 2:
            return None
        head = 2 + ((buf[i] << 8) | buf[i + 1]) + (2 if qos else 0)
        if head > n or head > self.max_packet:
            raise PacketTooLarge("packet of %d bytes over the %d limit" % (size, self.max_packet))
        if have < head:
            return None
        topic = bytes(buf[i + 2:i + head - (2 if qos else 0)]).decode("utf-8", "replace")
        pid = (buf[i + head - 2] << 8) | buf[i + head - 1] if qos else 0
        if have >= n:  # all of it is here: keep what follows it
            self._buf = bytearray(buf[i + n:])
        else:
            self._buf = bytearray()
            self._skip = n - have
        self._pos = 0
        return SKIPPED, qos, pid, topic, size


def publish_pid(flags, body):
    """The packet id of a PUBLISH whose body is otherwise malformed (0 when it has none), so the
    client can still acknowledge it and not be sent it forever."""
    if not (flags >> 1) & 3 or len(body) < 2:
        return 0
    i = 2 + ((body[0] << 8) | body[1])
    return (body[i] << 8) | body[i + 1] if i + 2 <= len(body) else 0


def _check_fixed_flags(ptype, flags):
    if ptype == PUBLISH:
        if flags & 0x06 == 0x06:
            raise MalformedPacket("PUBLISH with qos 3")
        if flags & 0x08 and not flags & 0x06:
            raise MalformedPacket("PUBLISH qos 0 with DUP set")
    elif ptype == _PUBREL or ptype == _SUBSCRIBE or ptype == _UNSUBSCRIBE:
        if flags != 0x02:
            raise MalformedPacket("type %d with reserved flags %d" % (ptype, flags))
    elif 1 <= ptype <= 14:
        if flags:
            raise MalformedPacket("type %d with reserved flags %d" % (ptype, flags))
    else:
        raise MalformedPacket("reserved packet type %d" % ptype)


def _take_u16(body, i):
    if i + 2 > len(body):
        raise MalformedPacket("truncated")
    return (body[i] << 8) | body[i + 1], i + 2


def _take_bytes(body, i):
    n, i = _take_u16(body, i)
    if i + n > len(body):
        raise MalformedPacket("truncated string")
    return bytes(body[i:i + n]), i + n


def _take_str(body, i):
    raw, i = _take_bytes(body, i)
    try:
        return raw.decode(), i
    except UnicodeError:
        raise MalformedPacket("string is not UTF-8")


def parse_pid(body):
    pid, _ = _take_u16(body, 0)
    if pid == 0:
        raise MalformedPacket("packet id 0")
    return pid


def parse_connack(body):
    """-> (session_present, return_code)."""
    if len(body) != 2 or body[0] & 0xFE:
        raise MalformedPacket("bad CONNACK")
    if body[1] and body[0]:
        raise MalformedPacket("CONNACK refusal with session present")
    return bool(body[0]), body[1]


def parse_publish(flags, body):
    """-> (topic str, payload bytes, qos, retain, dup, pid or 0)."""
    qos = (flags >> 1) & 3
    topic, i = _take_str(body, 0)
    if not topic or "+" in topic or "#" in topic:
        raise MalformedPacket("bad PUBLISH topic")
    pid = 0
    if qos:
        pid, i = _take_u16(body, i)
        if pid == 0:
            raise MalformedPacket("packet id 0")
    return topic, body[i:], qos, bool(flags & 1), bool(flags & 8), pid


def parse_suback(body):
    """-> (pid, [return codes])."""
    pid, i = _take_u16(body, 0)
    codes = list(body[i:])
    if pid == 0 or not codes:
        raise MalformedPacket("bad SUBACK")
    for c in codes:
        if c not in (0, 1, 2, 0x80):
            raise MalformedPacket("bad SUBACK code %d" % c)
    return pid, codes

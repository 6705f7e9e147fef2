# The broker's half of MQTT 3.1.1 (OASIS standard, 29 Oct 2014), for the test brokers: what a
# broker sends (CONNACK, SUBACK, PINGRESP, PUBREL) and parses (CONNECT, SUBSCRIBE). The firmware
# never needs it, so it stays out of firmware/mqtt_codec.py and off the device's heap.
import mqtt_codec as mc

# Packet types the device's codec keeps private (a module global costs heap there); spelled here
# for the test brokers and the tests. CONNACK, PUBLISH, PUBACK and SUBACK are mqtt_codec's.
CONNECT = 1
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
MAX_REMAINING = 268435455


def connack(session_present, code):
    return bytes((0x20, 2, 1 if session_present else 0, code))


def pubrel(pid):
    return mc._pid_packet(0x62, pid)


def suback(pid, codes):
    mc._check_pid(pid)
    return mc._packet(0x90, mc._u16(pid) + bytes(codes))


def pingresp():
    return b"\xd0\x00"


def parse_connect(body):
    """-> dict of the CONNECT fields."""
    proto, i = mc._take_bytes(body, 0)
    if proto != b"MQTT" or i + 4 > len(body) or body[i] != 4:
        raise mc.MalformedPacket("not MQTT 3.1.1")
    flags = body[i + 1]
    if flags & 1:
        raise mc.MalformedPacket("reserved CONNECT flag")
    keepalive, i = mc._take_u16(body, i + 2)
    cid, i = mc._take_str(body, i)
    out = {"client_id": cid, "clean": bool(flags & 2), "keepalive": keepalive,
           "will": None, "user": None, "password": None}
    if flags & 4:
        wtopic, i = mc._take_str(body, i)
        wpayload, i = mc._take_bytes(body, i)
        out["will"] = (wtopic, wpayload, (flags >> 3) & 3, bool(flags & 0x20))
    if flags & 0x80:
        out["user"], i = mc._take_str(body, i)
    if flags & 0x40:
        out["password"], i = mc._take_bytes(body, i)
    if i != len(body):
        raise mc.MalformedPacket("trailing bytes in CONNECT")
    return out


def parse_subscribe(body):
    """-> (pid, [(filter, qos)])."""
    pid, i = mc._take_u16(body, 0)
    topics = []
    while i < len(body):
        t, i = mc._take_str(body, i)
        if i >= len(body):
            raise mc.MalformedPacket("truncated SUBSCRIBE")
        topics.append((t, body[i]))
        i += 1
    if pid == 0 or not topics:
        raise mc.MalformedPacket("bad SUBSCRIBE")
    return pid, topics

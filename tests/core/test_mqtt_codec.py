# MQTT 3.1.1 packet codec: byte vectors worked out from the OASIS MQTT 3.1.1 standard, round trips,
# the incremental decoder, and what it refuses.
from binascii import unhexlify

import broker_codec as bc
import mqtt_codec as mc
from protocol import topic
from util import raises


def h(s):
    return unhexlify(s.replace(" ", ""))


def decode_all(data, max_packet=1 << 20):
    d = mc.Decoder(max_packet)
    d.feed(data)
    out = []
    while True:
        p = d.next()
        if p is None:
            return out
        out.append(p)


# Spec table 2.4 (remaining length) plus the 0 and 127/128 edges.
LENGTHS = [
    (0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"),
    (2097151, "ffff7f"), (2097152, "80808001"), (268435455, "ffffff7f"),
]


def test_remaining_length_boundaries_encode():
    for n, want in LENGTHS:
        assert mc.encode_length(n) == h(want), n
    assert raises(ValueError, mc.encode_length, 268435456)
    assert raises(ValueError, mc.encode_length, -1)


def test_remaining_length_boundaries_decode():
    for n, enc in LENGTHS:
        d = mc.Decoder(bc.MAX_REMAINING + 5)
        d.feed(b"\x30" + h(enc))
        if n == 0:
            # a PUBLISH with an empty body is complete (and then malformed when parsed)
            assert d.next() == (mc.PUBLISH, 0, b"")
        else:
            assert d.next() is None, n  # header understood, waiting for the body
    # a small body round trip through 2-byte lengths
    body = b"\x00\x01t" + b"x" * 200
    assert decode_all(b"\x30" + mc.encode_length(len(body)) + body) == [(mc.PUBLISH, 0, body)]


def test_five_byte_remaining_length_is_malformed():
    d = mc.Decoder(bc.MAX_REMAINING + 5)
    d.feed(h("30 ff ff ff ff 7f"))
    assert raises(mc.MalformedPacket, d.next)


def test_non_shortest_remaining_length_is_malformed():
    assert raises(mc.MalformedPacket, decode_all, h("d0 80 00"))


def test_connect_bytes_all_fields():
    # client id "d1", will topic "w" payload "x" qos 1 retained, user "u", password "p", keepalive 60,
    # clean session off. Flags: user 80 | password 40 | will retain 20 | will qos1 08 | will 04 = ec.
    pkt = mc.connect("d1", "u", b"p", 60, False, ("w", b"x", 1, True))
    assert pkt == h("10 1a 0004 4d515454 04 ec 003c 0002 6431 0001 77 0001 78 0001 75 0001 70")


def test_connect_variable_header_matches_spec_example():
    # Spec 3.1.2.10 example: "MQTT", level 4, flags ce (user, password, will qos 1, will, clean), keepalive 10
    pkt = mc.connect("c", "u", "p", 10, True, ("t", b"m", 1, False))
    assert pkt[2:12] == h("0004 4d515454 04 ce 000a")


def test_connect_minimal_and_roundtrip():
    assert mc.connect("ab", keepalive=0, clean=True) == h("10 0e 0004 4d515454 04 02 0000 0002 6162")
    ptype, flags, body = decode_all(mc.connect("dev-1", "dev-1", b"secret", 30, False,
                                               (topic("dev-1", "status"), b'{"v":1}', 1, True)))[0]
    assert (ptype, flags) == (bc.CONNECT, 0)
    c = bc.parse_connect(body)
    assert c["client_id"] == "dev-1" and c["user"] == "dev-1" and c["password"] == b"secret"
    assert c["keepalive"] == 30 and c["clean"] is False
    assert c["will"] == (topic("dev-1", "status"), b'{"v":1}', 1, True)
    assert raises(ValueError, mc.connect, "x", None, b"p")  # password without user


def test_publish_bytes_and_flags():
    assert mc.publish("a/b", b"hi", 1, False, 10) == h("32 09 0003 612f62 000a 6869")
    assert mc.publish("a/b", b"hi", 1, False, 10, dup=True)[0] == 0x3A
    assert mc.publish("a/b", b"hi", 0, True) == h("31 07 0003 612f62 6869")
    assert raises(ValueError, mc.publish, "a", b"", 1, False, 0)  # QoS 1 needs a packet id
    assert raises(ValueError, mc.publish, "a", b"", 3)


def test_publish_roundtrip_with_large_payload():
    payload = bytes(range(256)) * 40  # 10240 bytes: three length bytes
    pkt = mc.publish(topic("xyz", "event"), payload, 1, True, 65535, dup=True)
    [(ptype, flags, body)] = decode_all(pkt)
    assert ptype == mc.PUBLISH
    assert mc.parse_publish(flags, body) == (topic("xyz", "event"), payload, 1, True, True, 65535)


def test_small_packets_bytes():
    assert mc.puback(7) == h("40 02 0007")
    assert mc.pubrec(7) == h("50 02 0007")
    assert bc.pubrel(7) == h("62 02 0007")
    assert mc.pubcomp(7) == h("70 02 0007")
    assert mc.pingreq() == h("c0 00")
    assert bc.pingresp() == h("d0 00")
    assert mc.disconnect() == h("e0 00")
    assert bc.connack(False, 0) == h("20 02 00 00")
    assert bc.connack(True, 0) == h("20 02 01 00")
    assert mc.subscribe(1, [("a/b", 1)]) == h("82 08 0001 0003 612f62 01")
    assert bc.suback(1, [1, 0x80]) == h("90 04 0001 01 80")
    assert raises(ValueError, mc.puback, 0)


def test_parse_replies():
    assert mc.parse_connack(h("00 00")) == (False, 0)
    assert mc.parse_connack(h("01 00")) == (True, 0)
    assert mc.parse_connack(h("00 05")) == (False, 5)
    assert raises(mc.MalformedPacket, mc.parse_connack, h("01 05"))  # refusal with a session
    assert raises(mc.MalformedPacket, mc.parse_connack, h("02 00"))
    assert mc.parse_suback(h("0001 01 80")) == (1, [1, 0x80])
    assert raises(mc.MalformedPacket, mc.parse_suback, h("0001 03"))
    assert raises(mc.MalformedPacket, mc.parse_pid, h("0000"))
    pid, topics = bc.parse_subscribe(decode_all(mc.subscribe(9, [("a/#", 1), ("b", 0)]))[0][2])
    assert pid == 9 and topics == [("a/#", 1), ("b", 0)]


def test_decoder_fed_byte_by_byte():
    stream = (bc.connack(True, 0) + mc.publish("t/1", b"one", 1, False, 1)
              + bc.pingresp() + mc.publish("t/2", b"x" * 300, 0, True) + bc.suback(2, [1]) + mc.puback(3))
    d = mc.Decoder(1024)
    got = []
    for i in range(len(stream)):
        d.feed(stream[i:i + 1])
        while True:
            p = d.next()
            if p is None:
                break
            got.append(p)
    assert got == decode_all(stream)
    assert [p[0] for p in got] == [mc.CONNACK, mc.PUBLISH, bc.PINGRESP, mc.PUBLISH, mc.SUBACK, mc.PUBACK]
    assert mc.parse_publish(got[3][1], got[3][2]) == ("t/2", b"x" * 300, 0, True, False, 0)
    assert d.buffered() == 0


def test_decoder_refuses_oversize_before_the_body_arrives():
    d = mc.Decoder(100)
    d.feed(h("90 ff ff ff 7f"))  # a SUBACK announcing 256 MiB; only the header was fed
    assert raises(mc.PacketTooLarge, d.next)
    d = mc.Decoder(100)
    d.feed(b"\x30" + mc.encode_length(98))  # 1 + 1 + 98 = 100 bytes: just fits
    assert d.next() is None
    d = mc.Decoder(100)
    d.feed(b"\x90" + mc.encode_length(99))
    assert raises(mc.PacketTooLarge, d.next)
    d = mc.Decoder(100)
    d.feed(b"\x32" + mc.encode_length(5000) + b"\x01\x00")  # a PUBLISH whose topic alone is too long
    assert raises(mc.PacketTooLarge, d.next)


def test_decoder_skips_an_oversized_publish_and_reads_on():
    big = mc.publish("a/b", b"x" * 500, qos=1, pid=0x1234)
    after = mc.publish("a/b", b"next", qos=1, pid=5)
    d = mc.Decoder(100)
    d.feed(big[:3])  # not even its topic yet
    assert d.next() is None
    d.feed(big[3:60])
    assert d.next() == (mc.SKIPPED, 1, 0x1234, "a/b", len(big))
    assert d.next() is None and d.buffered() == 0  # what came of it is dropped ...
    for i in range(60, len(big), 97):
        d.feed(big[i:i + 97])  # ... and so is the rest, however it comes
    assert d.buffered() == 0
    d.feed(after)
    p = d.next()
    assert p[0] == mc.PUBLISH and mc.parse_publish(p[1], p[2])[1] == b"next"
    d = mc.Decoder(100)
    d.feed(big + after)  # the whole of it at once, and the next packet behind it
    assert d.next()[0] == mc.SKIPPED and d.next()[0] == mc.PUBLISH
    assert mc.publish_pid(0x02, h("00 03") + b"a+b" + h("00 09") + b"x") == 9  # a body parse_publish refuses
    assert mc.publish_pid(0x00, h("00 03") + b"a+b") == 0


def test_decoder_refuses_malformed_fixed_headers():
    bad = [
        "00 00",        # reserved type 0
        "f0 00",        # reserved type 15
        "36 00",        # PUBLISH qos 3
        "38 00",        # PUBLISH qos 0 with DUP
        "41 02 0001",   # PUBACK with flags
        "60 02 0001",   # PUBREL without its mandatory 0010 flags
        "80 00",        # SUBSCRIBE without its flags
        "20 03 000000", # CONNACK of 3 bytes
        "d0 01 00",     # PINGRESP with a body
    ]
    for b in bad:
        assert raises(mc.MalformedPacket, decode_all, h(b)), b


def test_parse_publish_refuses_bad_content():
    assert raises(mc.MalformedPacket, mc.parse_publish, 0, h("0005 6162"))  # topic runs past the end
    assert raises(mc.MalformedPacket, mc.parse_publish, 2, h("0001 61 00"))  # QoS 1, truncated id
    assert raises(mc.MalformedPacket, mc.parse_publish, 2, h("0001 61 0000"))  # QoS 1, id 0
    assert raises(mc.MalformedPacket, mc.parse_publish, 0, h("0001 23"))  # wildcard "#"
    assert raises(mc.MalformedPacket, mc.parse_publish, 0, h("0000"))  # empty topic
    assert raises(mc.MalformedPacket, mc.parse_publish, 0, h("0002 fffe"))  # not UTF-8

# The contract module on both interpreters: every golden vector of docs/protocol-vectors.json,
# the stage rule, topics and ids, and frames built and opened.
import json
import sys

try:
    from binascii import unhexlify
except ImportError:  # pragma: no cover
    from ubinascii import unhexlify

import protocol as p
import protocol_host as host
from sign import Signer
from util import raises

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def _vectors():
    with open(HERE + "/../../docs/protocol-vectors.json") as f:
        return json.load(f)


def _payload(v):
    if "payload_hex" in v:
        return unhexlify(v["payload_hex"])
    return v["payload"].encode()


def _check(v):
    """A frame as the contract reads it, in the order the vectors' `order` states."""
    dev, kind = host.split_topic(v["topic"], host.DEVICE_KINDS + host.BRIDGE_KINDS)
    if kind != v["kind"]:
        raise p.Refused("bad-topic")
    payload = _payload(v)
    p.split_frame(payload)
    if v["key"] is None:
        raise p.Refused("unknown-device")
    body = p.open_frame(payload, Signer(unhexlify(v["key"])).hexmac)
    if kind == "event":
        ev = host.check_event(p.loads_object(body), dev)
        return {"event": {k: ev[k] for k in ("id", "dev", "ctr", "type", "cause")}}
    msg = p.check_message(body)
    if kind == "ack":
        eid, stage, incident, reason = p.check_ack(msg, dev, v.get("ep"))
        return {"ack": {"id": eid, "stage": stage, "incident": incident, "reason": reason}}
    name, ctr, args = p.check_command(msg)
    return {"cmd": {"cmd": name, "ctr": ctr, "args": args}}


def test_every_frame_vector():
    vs = _vectors()["frames"]
    assert len(vs) > 50
    for v in vs:
        try:
            got = _check(v)
            got["ok"] = True
        except p.Refused as e:
            got = {"ok": False, "reason": e.reason}
        assert got == v["expect"], "%s: got %r, want %r" % (v["name"], got, v["expect"])


def test_good_frames_build_to_the_vector_bytes():
    """What the bridge sends (acks, commands) is built byte for byte as the vectors have it. On
    MicroPython, whose dicts keep no order, the same fields (only the bridge builds these)."""
    ordered = sys.implementation.name != "micropython"
    n = 0
    for v in _vectors()["frames"]:
        b = v.get("built_from")
        if not b:
            continue
        if v["kind"] == "ack":
            body = host.ack_body(b["eid"], b["stage"], b.get("incident"), b.get("reason"), b["ts"])
        else:
            body = host.command_body(b["cmd"], b["ctr"], b["args"])
        signer = Signer(unhexlify(v["key"]))
        signed = p.frame(p.dumps(body), signer.hexmac)
        if ordered:
            assert bytes(signed) == _payload(v), v["name"]
        else:
            assert json.loads(p.open_frame(signed, signer.hexmac)) == json.loads(_payload(v).split(b"\n")[0])
        n += 1
    assert n >= 8


def test_stage_rule():
    st = _vectors()["stages"]
    assert list(p.STAGES) == st["order"] and list(p.FINAL) == st["final"]
    for new, old, want in st["advances"]:
        assert p.advances(new, old) == want, (new, old)


def test_device_ids():
    ids = _vectors()["device_ids"]
    for s in ids["valid"]:
        assert host.valid_id(s), s
    for s in ids["invalid"]:
        assert not host.valid_id(s), s
    assert not host.valid_id(None) and not host.valid_id(17)


def test_topics_and_ids():
    assert p.topic("hn-a-0001", "event") == p.PREFIX + "hn-a-0001/event"
    assert host.split_topic(p.topic("hn-a-0001", "status")) == ("hn-a-0001", "status")
    assert raises(p.Refused, host.split_topic, p.topic("hn-a-0001", "ack"))  # not a device -> bridge kind
    assert host.every("event") == p.PREFIX + "+/event"
    assert host.bridge_topic("b1", "state") == p.PREFIX + "bridge/b1/state"
    assert p.event_id("dev-1", 17) == "dev-1-00000017"
    assert p.ctr_of("dev-1-00000017") == 17
    assert p.ctr_of("garbage") == -1 and p.ctr_of(None) == -1
    assert "pattern write " + p.topic("%u", "event") in host.acl_device()
    assert "pattern read " + p.topic("%u", "cmd") in host.acl_device()
    assert "topic write " + host.every("ack") in host.acl_bridge()
    assert host.acl_watcher() == ["topic read " + host.ALL]


def test_frame_roundtrip_and_tampering():
    s = Signer(bytes(range(32)))
    body = b'{"v":1,"id":"x-00000001"}'
    f = p.frame(body, s.hexmac)
    assert bytes(f).startswith(body + b"\n") and len(f) == len(body) + 65
    assert p.open_frame(f, s.hexmac) == body
    assert raises(p.Refused, p.open_frame, bytes(f).replace(b"x-", b"y-"), s.hexmac)
    assert raises(p.Refused, p.open_frame, f, Signer(bytes(32)).hexmac)
    assert raises(p.Refused, p.open_frame, b"no newline", s.hexmac)
    assert raises(p.Refused, p.open_frame, "text, not bytes", s.hexmac)
    assert raises(ValueError, p.frame, b"a\nb", s.hexmac)
    assert p.equal(b"abc", b"abc") and not p.equal(b"abc", b"abd") and not p.equal(b"ab", b"abc")


def test_bodies_are_compact_utf8():
    assert p.dumps({"a": "Tầng 3"}) == '{"a":"Tầng 3"}'.encode()
    assert raises(ValueError, host.ack_body, "d-00000001", "sent")  # the device's own stage
    assert "reason" in host.ack_body("d-00000001", "failed") and "incident" not in host.ack_body("d-00000001", "stored")
    assert len(host.ack_body("d-00000001", "failed", reason="x" * 500)["reason"]) == host.MAX_REASON
    assert raises(ValueError, host.command_body, "format-disk", 1)

"""Writes docs/protocol-vectors.json: the golden vectors of the device <-> bridge contract.

Each frame is signed here with the standard library's hmac over bodies spelled out below, so the
vectors do not come from the code they test. The firmware core tests (CPython and MicroPython) and
the bridge tests both check every vector. `--check` exits 1 when the file is not what this writes.

    python scripts/make_protocol_vectors.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from firmware.protocol import PREFIX  # noqa: E402  (the one constant taken from the code under test)

OUT = ROOT / "docs" / "protocol-vectors.json"

EP = "5eed0001"  # an install epoch (docs/protocol.md section 4)
KEYS = {  # device id -> its 32-byte key, hex (test keys: never provisioned anywhere)
    "hn-a-0001": bytes(range(32)).hex(),
    "hcm-s-0002": bytes(range(32, 64)).hex(),
}
WRONG_KEY = bytes(32).hex()
A, S = "hn-a-0001", "hcm-s-0002"
FIXED = {"lat": 21.028511, "lon": 105.804817, "acc": 15, "src": "fixed", "age": 0}
DROP = object()
GPS = {"lat": 10.790867, "lon": 106.668723, "acc": 5, "src": "gps", "age": 2}


def body(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key_hex: str, raw: bytes) -> bytes:
    return raw + b"\n" + hmac.new(bytes.fromhex(key_hex), raw, hashlib.sha256).hexdigest().encode()


def ev(dev_: str, n: int, type_: str, cause_: str, loc=FIXED, data=None, ref=None, **over) -> dict:
    """An event body; `over` replaces fields (DROP removes one)."""
    e = {"v": 1, "id": f"{dev_}-{n:08d}", "dev": dev_, "ctr": n, "type": type_, "cause": cause_,
         "ts": 1764412345, "up": 812345, "boot": 3, "loc": loc, "data": data or {}}
    if ref:
        e["ref"] = ref
    e.update(over)
    return {k: v for k, v in e.items() if v is not DROP}


def payload_fields(p: bytes) -> dict:
    try:
        return {"payload": p.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload_hex": p.hex()}


def frame_vector(name, kind, topic_dev, payload: bytes, expect: dict, key: str | None = "topic", topic=None):
    """key: "topic" = the key of the topic's device; None = the device is not registered."""
    v = {"name": name, "kind": kind, "topic": topic or f"{PREFIX}{topic_dev}/{kind}",
         "key": KEYS.get(topic_dev) if key == "topic" else key}
    v.update(payload_fields(payload))
    v["expect"] = expect
    return v


def ok_event(e: dict) -> dict:
    return {"ok": True, "event": {k: e[k] for k in ("id", "dev", "ctr", "type", "cause")}}


def refused(reason: str) -> dict:
    return {"ok": False, "reason": reason}


def events() -> list:
    out = []
    good = [
        ("alarm-button-fixed", ev(A, 17, "alarm", "button")),
        ("prealarm-heat-gps", ev(S, 40, "prealarm", "heat", GPS, {"t": 58.2, "rh": 31.0, "hist": [25.1, 41.0]})),
        ("alarm-heat-confirms-prealarm", ev(S, 41, "alarm", "heat", GPS, {"t": 66.0}, ref=f"{S}-00000040")),
        ("cancel-by-long-hold", ev(A, 18, "cancel", "button", ref=f"{A}-00000017")),
        ("fault-i2c-with-detail", ev(S, 42, "fault", "i2c", data={"detail": "bme680: no answer at 0x77"})),
        ("restore-of-a-fault", ev(S, 43, "restore", "i2c", data={"detail": "bme680: cleared"}, ref=f"{S}-00000042")),
        ("restore-ends-heat-incident", ev(S, 44, "restore", "heat", GPS, ref=f"{S}-00000040")),
        ("test-selftest", ev(A, 19, "test", "selftest", data={"indicator": "ok", "pass": True})),
        ("alarm-clock-not-synced", ev(A, 20, "alarm", "button", ts=None)),
        ("fault-detail-in-vietnamese", ev(A, 21, "fault", "config", data={"detail": "Tầng 3: cấu hình hỏng"})),
        ("counter-zero", ev(A, 0, "test", "selftest")),
        # Firmware with install epochs: <dev>-<epoch>-<ctr>, the epoch signed in the body too.
        ("alarm-with-install-epoch", ev(A, 1, "alarm", "button", ep=EP, id=f"{A}-{EP}-00000001")),
        ("cancel-with-install-epoch", ev(A, 2, "cancel", "button", ref=f"{A}-{EP}-00000001", ep=EP,
                                         id=f"{A}-{EP}-00000002")),
        # A transmitter on a fire alarm panel (docs/transmitter.md): the fire relay, its restore, the
        # panel's own fault relay, the supervised line's wiring faults, and the periodic test.
        ("alarm-panel-fire-relay", ev(A, 50, "alarm", "panel", data={"input": "fire", "zone": "Tầng 1-5"})),
        ("restore-panel-relay-open-again", ev(A, 51, "restore", "panel", data={"input": "fire"}, ref=f"{A}-00000050")),
        ("fault-panel-fault-relay", ev(A, 52, "fault", "panel-fault",
                                       data={"input": "fault", "detail": "fault: the panel reports a fault"})),
        ("fault-line-open", ev(A, 53, "fault", "line-open", data={"input": "fire", "detail": "fire: line open (3.10 V)"})),
        ("restore-line-open", ev(A, 54, "restore", "line-open", data={"input": "fire", "detail": "fire: line open cleared"},
                                 ref=f"{A}-00000053")),
        ("fault-line-short", ev(A, 55, "fault", "line-short", data={"input": "fire", "detail": "fire: line short (0.00 V)"})),
        ("test-periodic", ev(A, 56, "test", "periodic", data={"test_s": 86400})),
        # Every range at its upper end (docs/protocol.md section 11) is still taken.
        ("event-at-every-upper-bound", ev(A, 2**63 - 1, "fault", "config", dict(FIXED, acc=20000000, age=2**32 - 1),
                                          {"detail": "x" * 500, "a": {"b": {"c": {}}}, "hist": list(range(64))},
                                          ts=2**32 - 1, up=2**40, boot=2**32 - 1)),
    ]
    for name, e in good:
        out.append(frame_vector(name, "event", e["dev"], sign(KEYS[e["dev"]], body(e)), ok_event(e)))

    alarm = ev(A, 22, "alarm", "button")
    raw = body(alarm)
    signed = sign(KEYS[A], raw)
    out += [
        frame_vector("refused-topic-upper-case-id", "event", A, signed, refused("bad-topic"),
                     topic=f"{PREFIX}HN-A-0001/event"),
        frame_vector("refused-topic-unknown-kind", "event", A, signed, refused("bad-topic"),
                     topic=f"{PREFIX}{A}/events"),
        frame_vector("refused-topic-extra-level", "event", A, signed, refused("bad-topic"),
                     topic=f"{PREFIX}{A}/x/event"),
        frame_vector("refused-unsigned", "event", A, raw, refused("unsigned")),
        frame_vector("refused-signature-upper-case-hex", "event", A, raw + b"\n" + signed[-64:].upper(),
                     refused("bad-signature-format")),
        frame_vector("refused-signature-short", "event", A, signed[:-1], refused("bad-signature-format")),
        frame_vector("refused-wrong-key", "event", A, sign(WRONG_KEY, raw), refused("bad-signature")),
        frame_vector("refused-body-changed-after-signing", "event", A,
                     signed.replace(b'"cause":"button"', b'"cause":"heat"  '), refused("bad-signature")),
        frame_vector("refused-unknown-device", "event", "hn-z-9999",
                     sign(KEYS[A], body(ev("hn-z-9999", 1, "alarm", "button"))), refused("unknown-device"), key=None),
        frame_vector("refused-too-large", "event", A,
                     sign(KEYS[A], body(ev(A, 23, "alarm", "button", data={"pad": "x" * 8200}))), refused("too-large")),
        frame_vector("refused-not-json", "event", A, sign(KEYS[A], b"alarm!"), refused("bad-json")),
        frame_vector("refused-json-array", "event", A, sign(KEYS[A], b"[1,2]"), refused("bad-json")),
        frame_vector("refused-json-nan", "event", A,
                     sign(KEYS[A], raw.replace(b'"data":{}', b'"data":{"t":NaN}')), refused("bad-json")),
        frame_vector("refused-not-utf8", "event", A, sign(KEYS[A], raw.replace(b"button", b"bu\xfftton")),
                     refused("bad-json")),
        # JSON a dict cannot be dumped as: 1e999 reads as infinity, 10**30 is past 64 bits, a lone surrogate
        frame_vector("refused-accuracy-1e999", "event", A, sign(KEYS[A], raw.replace(b'"acc":15', b'"acc":1e999')),
                     refused("bad-field")),
        frame_vector("refused-data-number-1e999", "event", A,
                     sign(KEYS[A], raw.replace(b'"data":{}', b'"data":{"t":1e999}')), refused("bad-field")),
        frame_vector("refused-ts-past-64-bits", "event", A,
                     sign(KEYS[A], raw.replace(b'"ts":1764412345', b'"ts":1' + b"0" * 30)), refused("bad-field")),
        frame_vector("refused-data-lone-surrogate", "event", A,
                     sign(KEYS[A], raw.replace(b'"data":{}', b'"data":{"detail":"\\ud800"}')), refused("bad-field")),
    ]
    bad_bodies = [
        ("refused-version-2", ev(A, 24, "alarm", "button", v=2), "bad-version"),
        ("refused-version-bool", ev(A, 24, "alarm", "button", v=True), "bad-version"),
        ("refused-missing-loc", ev(A, 25, "alarm", "button", loc=DROP), "missing-field"),
        ("refused-missing-ts", ev(A, 25, "alarm", "button", ts=DROP), "missing-field"),
        ("refused-id-not-dev-ctr", ev(A, 26, "alarm", "button", id=f"{A}-26"), "bad-field"),
        ("refused-ctr-negative", ev(A, -1, "alarm", "button", id=f"{A}--0000001"), "bad-field"),
        ("refused-ctr-bool", ev(A, 1, "alarm", "button", ctr=True), "bad-field"),
        ("refused-ctr-over-63-bits", ev(A, 2**63, "alarm", "button"), "bad-field"),
        ("refused-unknown-type", ev(A, 27, "panic", "button"), "bad-field"),
        ("refused-alarm-cause-unknown", ev(A, 28, "alarm", "fire"), "bad-field"),
        ("refused-prealarm-from-a-panel", ev(A, 28, "prealarm", "panel"), "bad-field"),
        ("refused-line-open-as-an-alarm", ev(A, 28, "alarm", "line-open"), "bad-field"),
        ("refused-latitude-91", ev(A, 29, "alarm", "button", loc=dict(FIXED, lat=91.0)), "bad-field"),
        ("refused-location-source", ev(A, 30, "alarm", "button", loc=dict(FIXED, src="wifi")), "bad-field"),
        ("refused-data-not-object", ev(A, 31, "alarm", "button", data=[1]), "bad-field"),
        ("refused-cancel-without-ref", ev(A, 32, "cancel", "button"), "missing-field"),
        ("refused-cancel-cause-too-long", ev(A, 33, "cancel", "b" * 33, ref=f"{A}-00000017"), "bad-field"),
        ("refused-ref-to-itself", ev(A, 34, "cancel", "button", ref=f"{A}-00000034"), "bad-field"),
        ("refused-ref-to-another-device", ev(A, 35, "cancel", "button", ref=f"{S}-00000001"), "bad-field"),
        ("refused-epoch-upper-case", ev(A, 3, "alarm", "button", ep=EP.upper(), id=f"{A}-{EP.upper()}-00000003"),
         "bad-field"),
        ("refused-epoch-too-short", ev(A, 3, "alarm", "button", ep=EP[:6], id=f"{A}-{EP[:6]}-00000003"), "bad-field"),
        ("refused-epoch-not-in-id", ev(A, 3, "alarm", "button", ep=EP), "bad-field"),
        ("refused-id-with-another-epoch", ev(A, 3, "alarm", "button", ep=EP, id=f"{A}-00c0ffee-00000003"),
         "bad-field"),
        # just past a range (docs/protocol.md section 11)
        ("refused-ts-past-2106", ev(A, 36, "alarm", "button", ts=2**32), "bad-field"),
        ("refused-uptime-past-2-40-ms", ev(A, 37, "alarm", "button", up=2**40 + 1), "bad-field"),
        ("refused-boot-past-32-bits", ev(A, 38, "alarm", "button", boot=2**32), "bad-field"),
        ("refused-accuracy-past-half-the-earth", ev(A, 39, "alarm", "button", loc=dict(FIXED, acc=20000001)),
         "bad-field"),
        ("refused-cancel-cause-not-a-word", ev(A, 40, "cancel", "long hold", ref=f"{A}-00000017"), "bad-field"),
        ("refused-ref-not-an-event-id", ev(A, 41, "cancel", "button", ref=f"{A}-x"), "bad-field"),
        ("refused-data-too-deep", ev(A, 42, "alarm", "button", data={"a": {"b": {"c": {"d": {}}}}}), "bad-field"),
        ("refused-data-list-too-long", ev(A, 43, "alarm", "button", data={"hist": list(range(65))}), "bad-field"),
        ("refused-data-text-too-long", ev(A, 44, "fault", "config", data={"detail": "x" * 501}), "bad-field"),
        ("refused-data-control-character", ev(A, 45, "fault", "config", data={"detail": "a\u0007b"}), "bad-field"),
    ]
    for name, e, reason in bad_bodies:
        out.append(frame_vector(name, "event", A, sign(KEYS[A], body(e)), refused(reason)))
    # Signed with the topic's device key, but naming another device inside (the ACL vouches for the topic).
    other = ev(S, 5, "alarm", "button")
    out.append(frame_vector("refused-body-names-another-device", "event", A, sign(KEYS[A], body(other)),
                            refused("device-mismatch")))
    return out


def ack(eid, stage, incident=None, reason=None, ts=1764412399, **over) -> dict:
    a = {"v": 1, "id": eid, "stage": stage}
    if stage == "accepted" and incident:
        a["incident"] = incident
    if stage == "failed":
        a["reason"] = reason or "delivery failed"
    a["ts"] = ts
    a.update(over)
    return a


def acks() -> list:
    out = []
    good = [
        ("ack-stored", dict(eid=f"{A}-00000017", stage="stored")),
        ("ack-forwarded", dict(eid=f"{A}-00000017", stage="forwarded")),
        ("ack-accepted-with-incident", dict(eid=f"{A}-00000017", stage="accepted", incident="114-20261201-000042")),
        ("ack-failed-with-reason", dict(eid=f"{A}-00000017", stage="failed", reason="no answer from 114 within 100 s")),
        ("ack-failed-reason-in-vietnamese", dict(eid=f"{A}-00000017", stage="failed", reason="114 từ chối")),
    ]
    # ep: the install the device is in when it checks the ack (none: firmware before epochs)
    good += [("ack-stored-for-this-install", dict(eid=f"{A}-{EP}-00000001", stage="stored"), EP)]
    for name, a, *ep in good:
        b = ack(**a)
        expect = {"ok": True, "ack": {"id": b["id"], "stage": b["stage"], "incident": b.get("incident"),
                                      "reason": b.get("reason")}}
        v = frame_vector(name, "ack", A, sign(KEYS[A], body(b)), expect)
        if ep:
            v["ep"] = ep[0]
        v["built_from"] = dict(a, ts=b["ts"])  # ack_frame(key, eid, stage, incident, reason, ts) makes these bytes
        out.append(v)
    bad = [
        ("ack-refused-device-stage-sent", ack(f"{A}-00000017", "sent"), "bad-field"),
        ("ack-refused-unknown-stage", ack(f"{A}-00000017", "delivered"), "bad-field"),
        ("ack-refused-other-devices-event", ack(f"{S}-00000017", "stored"), "bad-field"),
        ("ack-refused-not-an-event-id", ack(f"{A}-x", "stored"), "bad-field"),
        ("ack-refused-version-2", ack(f"{A}-00000017", "stored", v=2), "bad-version"),
    ]
    for name, b, reason in bad:
        out.append(frame_vector(name, "ack", A, sign(KEYS[A], body(b)), refused(reason)))
    # An ack binds to one install's frame: after a re-flash the counter starts again, and an ack for
    # the earlier install's event of the same number must not clear the new one.
    for name, eid in (("ack-refused-earlier-install", f"{A}-00c0ffee-00000001"),
                      ("ack-refused-before-epochs", f"{A}-00000001")):
        v = frame_vector(name, "ack", A, sign(KEYS[A], body(ack(eid, "stored"))), refused("other-epoch"))
        v["ep"] = EP
        out.append(v)
    out.append(frame_vector("ack-refused-wrong-key", "ack", A, sign(WRONG_KEY, body(ack(f"{A}-00000017", "stored"))),
                            refused("bad-signature")))
    out.append(frame_vector("ack-refused-not-json", "ack", A, sign(KEYS[A], b"stored"), refused("bad-json")))
    return out


def commands() -> list:
    out = []
    good = [
        ("cmd-identify", {"v": 1, "cmd": "identify", "ctr": 1764412345123, "args": {}}),
        ("cmd-config", {"v": 1, "cmd": "config", "ctr": 1764412345124, "args": {"telemetry_s": 10}}),
        ("cmd-self-test", {"v": 1, "cmd": "self-test", "ctr": 1764412345125, "args": {}}),
    ]
    for name, c in good:
        v = frame_vector(name, "cmd", A, sign(KEYS[A], body(c)),
                         {"ok": True, "cmd": {"cmd": c["cmd"], "ctr": c["ctr"], "args": c["args"]}})
        v["built_from"] = {"cmd": c["cmd"], "ctr": c["ctr"], "args": c["args"]}
        out.append(v)
    bad = [
        ("cmd-refused-unknown", {"v": 1, "cmd": "format-disk", "ctr": 1764412345126, "args": {}}, "unknown-command"),
        ("cmd-refused-no-ctr", {"v": 1, "cmd": "reboot", "args": {}}, "bad-field"),
        ("cmd-refused-args-list", {"v": 1, "cmd": "config", "ctr": 1764412345127, "args": []}, "bad-field"),
        ("cmd-refused-version-0", {"v": 0, "cmd": "reboot", "ctr": 1764412345128, "args": {}}, "bad-version"),
    ]
    for name, c, reason in bad:
        out.append(frame_vector(name, "cmd", A, sign(KEYS[A], body(c)), refused(reason)))
    out.append(frame_vector("cmd-refused-wrong-key", "cmd", A,
                            sign(WRONG_KEY, body({"v": 1, "cmd": "reboot", "ctr": 1764412345129, "args": {}})),
                            refused("bad-signature")))
    return out


def document() -> dict:
    return {
        "about": "Golden vectors of the device <-> bridge contract (docs/protocol.md). Made by "
                 "scripts/make_protocol_vectors.py; checked by tests/core/test_protocol.py (CPython and "
                 "MicroPython) and tests/bridge/test_protocol_vectors.py. A frame's payload is `payload` "
                 "(UTF-8 text) or `payload_hex`; `key` is the device key in hex (null: not registered).",
        "order": "topic, size, line feed, signature format, device key, signature, JSON, fields, device",
        "frames": events() + acks() + commands(),
        "stages": {
            "order": ["sent", "stored", "forwarded", "failed", "accepted"],
            "final": ["accepted"],
            "advances": [  # [new, old, moves on?]
                ["stored", None, True], ["sent", None, True], ["forwarded", "stored", True],
                ["stored", "forwarded", False], ["accepted", "forwarded", True], ["failed", "stored", True],
                ["accepted", "failed", True], ["failed", "accepted", False], ["stored", "accepted", False],
                ["stored", "stored", False], ["delivered", None, False],
            ],
        },
        "device_ids": {
            "valid": ["hn-a-0001", "abc", "a" * 32, "0-9"],
            "invalid": ["ab", "a" * 33, "HN-A-0001", "hn_a_0001", "hn/a", "hn+a", "hn#a", "", "tầng-3", "bridge",
                        "watcher"],
        },
    }


def render() -> str:
    return json.dumps(document(), ensure_ascii=False, indent=1) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    a = p.parse_args(argv)
    text = render()
    if a.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.name} is out of date: run python scripts/make_protocol_vectors.py", file=sys.stderr)
            return 1
        print(f"{OUT.name}: up to date")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(document()['frames'])} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

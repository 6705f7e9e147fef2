"""Stage 1, parse: topic and payload bytes -> a signed frame, and (after its HMAC checks) a valid event.

Split in two because the protocol checks the signature over the exact body bytes *before* the body is
parsed (docs/protocol.md section 3): `split_frame` runs first, `parse_event` only on an authentic body.
Every failure is a `Rejected` with a short machine-readable reason, counted by the caller.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

TOPIC_RE = re.compile(r"^baochay/v1/([a-z0-9-]{3,32})/(event|telemetry|status)$")
DEV_RE = re.compile(r"^[a-z0-9-]{3,32}$")
HEX64_RE = re.compile(rb"^[0-9a-f]{64}$")
TYPES = ("alarm", "prealarm", "cancel", "restore", "fault", "test")
ALARM_CAUSES = ("button", "heat", "smoke", "multi")
FAULT_CAUSES = ("config", "sensor", "i2c", "battery", "tamper", "gps", "chamber", "watchdog", "outbox")
CAUSES = {
    "alarm": ALARM_CAUSES,
    "prealarm": ALARM_CAUSES,
    "fault": FAULT_CAUSES,
    "restore": FAULT_CAUSES + ("heat", "smoke", "multi"),  # a fault cleared, or a sensor alarm cleared
    "test": ("selftest",),
}
DEFAULT_MAX_PAYLOAD = 8192


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    dev: str  # device id from the topic
    kind: str  # event | telemetry | status
    body: bytes
    sig: bytes  # 64 lower-case hex digits, as bytes


def split_topic(topic: str) -> tuple[str, str]:
    m = TOPIC_RE.match(topic)
    if not m:
        raise Rejected("bad-topic")
    return m.group(1), m.group(2)


def split_frame(topic: str, payload: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """An event publish -> Frame (not yet authenticated)."""
    dev, kind = split_topic(topic)
    if len(payload) > max_payload:
        raise Rejected("too-large", f"{len(payload)} bytes > {max_payload}")
    i = payload.find(b"\n")
    if i < 0:
        raise Rejected("unsigned")
    body, sig = bytes(payload[:i]), bytes(payload[i + 1 :])
    if not HEX64_RE.match(sig):
        raise Rejected("bad-signature-format")
    return Frame(dev, kind, body, sig)


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


def loads_object(body: bytes) -> dict:
    """Strict JSON object (no NaN/Infinity), else Rejected('bad-json')."""
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Rejected("bad-json") from None
    if not isinstance(obj, dict):
        raise Rejected("bad-json", "not an object")
    return obj


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _need(obj: dict, key: str, check, what: str):
    if key not in obj:
        raise Rejected("missing-field", key)
    v = obj[key]
    if not check(v):
        raise Rejected("bad-field", f"{key} must be {what}")
    return v


def parse_event(body: bytes) -> dict:
    """Authentic body bytes -> the event dict, validated against docs/protocol.md section 4."""
    ev = loads_object(body)
    v = ev.get("v")
    if not _is_int(v) or v != 1:
        raise Rejected("bad-version", repr(v)[:20])
    dev = _need(ev, "dev", lambda x: isinstance(x, str) and DEV_RE.match(x), "a device id")
    ctr = _need(ev, "ctr", lambda x: _is_int(x) and 0 <= x < 2**63, "a non-negative int")
    eid = _need(ev, "id", lambda x: isinstance(x, str), "a string")
    if eid != f"{dev}-{ctr:08d}":
        raise Rejected("bad-field", "id must be <dev>-<ctr as 8 digits>")
    typ = _need(ev, "type", lambda x: x in TYPES, "an event type")
    if typ == "cancel":  # section 4 names no cancel causes: take any short word (the firmware's choice)
        _need(ev, "cause", lambda x: isinstance(x, str) and 0 < len(x) <= 32, "a short string")
    else:
        _need(ev, "cause", lambda x: isinstance(x, str) and x in CAUSES[typ], f"a {typ} cause")
    _need(ev, "ts", lambda x: x is None or (_is_int(x) and x >= 0), "int or null")
    _need(ev, "up", lambda x: _is_int(x) and x >= 0, "a non-negative int")
    _need(ev, "boot", lambda x: _is_int(x) and x >= 0, "a non-negative int")
    loc = _need(ev, "loc", lambda x: isinstance(x, dict), "an object")
    _need(loc, "lat", lambda x: _is_num(x) and -90 <= x <= 90, "latitude")
    _need(loc, "lon", lambda x: _is_num(x) and -180 <= x <= 180, "longitude")
    _need(loc, "acc", lambda x: _is_num(x) and x >= 0, "metres >= 0")
    _need(loc, "src", lambda x: x in ("gps", "fixed"), "gps or fixed")
    _need(loc, "age", lambda x: _is_int(x) and x >= 0, "seconds >= 0")
    _need(ev, "data", lambda x: isinstance(x, dict), "an object")
    if typ == "cancel" or "ref" in ev:
        ref = _need(ev, "ref", lambda x: isinstance(x, str) and x.startswith(dev + "-"), "an event id of this device")
        if ref == eid:
            raise Rejected("bad-field", "ref must name another event")
    return ev

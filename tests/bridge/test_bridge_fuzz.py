"""Random and mutated payloads never crash the parser/authenticator and are never let through."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bridge_stages import DEV, KEY, TOPIC, body, signed

from bridge import db, pipeline
from bridge.stages.parse import read_status, read_telemetry
from bridge.workers.supervision import apply_birth, apply_telemetry
from firmware import protocol
from firmware.protocol import Refused

GOOD = signed(body())


def run(topic: str, payload: bytes):
    """The ingest path up to the store; returns the event or the rejection reason."""
    try:
        return pipeline.admit(topic, payload, lambda d: KEY if d == DEV else None)[1]
    except Refused as r:
        return r.reason


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_are_rejected(payload):
    assert isinstance(run(TOPIC, payload), str)


@settings(max_examples=400)
@given(st.data())
def test_mutated_frames_never_pass(data):
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "delete":
            del raw[i]
        else:
            raw.insert(i, data.draw(st.integers(0, 255)))
    out = run(TOPIC, bytes(raw))
    if bytes(raw) != GOOD:
        assert isinstance(out, str)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(body())), json_values, max_size=6))
def test_validly_signed_but_malformed_bodies_never_crash(changes):
    """Even an authentic body (a device bug) is checked field by field: a reason, never an exception."""
    b = body()
    b.update(changes)
    out = run(TOPIC, signed(b))
    assert isinstance(out, (str, dict))
    if isinstance(out, dict):
        assert out["dev"] == DEV and out["id"] == f"{DEV}-{out['ctr']:08d}"


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_any_other_key_is_refused(key):
    if key == KEY:
        return
    raw = signed(body()).split(b"\n")[0]
    forged = raw + b"\n" + hmac.new(key, raw, hashlib.sha256).hexdigest().encode()
    assert run(TOPIC, forged) == "bad-signature"


# Anything JSON can spell, the awkward too: ints past 64 bits, 1e999 (read as infinity), lone surrogates.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
any_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=8,
)


def spelled(obj) -> bytes:
    """JSON as a device might send it: json.dumps' Infinity (which no reader takes) spelled 1e999."""
    return json.dumps(obj, separators=(",", ":")).replace("Infinity", "1e999").encode()


def holds_only_storable_values(v) -> bool:
    """What SQLite, a JSON sink and a log line all take: 64-bit ints, finite floats, UTF-8 text."""
    if isinstance(v, bool) or v is None:
        return True
    if isinstance(v, int):
        return -(2**63) <= v < 2**63
    if isinstance(v, float):
        return v - v == 0  # neither NaN nor infinite
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(v, list):
        return all(holds_only_storable_values(x) for x in v)
    return all(holds_only_storable_values(k) and holds_only_storable_values(x) for k, x in v.items())


def signed_raw(raw: bytes) -> bytes:
    return raw + b"\n" + hmac.new(KEY, raw, hashlib.sha256).hexdigest().encode()


numbers = st.integers() | st.floats() | st.sampled_from([2**32, 2**40 + 1, 2**63, 10**30, -1])
event_changes = st.fixed_dictionaries({}, optional={
    "ts": numbers | st.none(), "up": numbers, "boot": numbers, "data": st.dictionaries(any_text, any_values),
    "cause": any_text, "ref": st.builds(lambda s: f"{DEV}-{s}", any_text | st.integers().map(str)),
})
loc_changes = st.fixed_dictionaries({}, optional={k: numbers for k in ("lat", "lon", "acc", "age")})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event_changes, loc_changes, st.booleans())
def test_an_event_taken_holds_only_what_the_store_and_the_sinks_can_take(changes, loc, cancel):
    """Fields of the right kind but any value: what passes is storable and deliverable."""
    b = body(type="cancel", ref=f"{DEV}-00000016") if cancel else body()
    b.update(changes)
    b["loc"] = dict(b["loc"], **loc)
    out = run(TOPIC, signed_raw(spelled(b)))
    if isinstance(out, dict):
        assert holds_only_storable_values(out), out
        if out["ts"] is not None:
            datetime.fromtimestamp(out["ts"], timezone.utc)  # a sink's date
        json.dumps(out, allow_nan=False, ensure_ascii=False).encode()  # a JSON sink's body


_CONN = db.connect(":memory:", durable=False)
TELEMETRY = {"v": 1, "dev": DEV, "up": 1, "ts": 1764412345, "boot": 3, "heap_free": 60000, "heap_peak": 40000,
             "rssi": -61, "batt": {"v": 3.9, "pct": 80}, "outbox": 0, "r": {}}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(TELEMETRY) + ["state", "fw", "board"]), numbers | any_values,
                       max_size=6))
def test_telemetry_and_status_taken_are_written_without_an_error(changes):
    for base, read, apply in (
        (TELEMETRY, read_telemetry, lambda t: apply_telemetry(_CONN, DEV, t, 20, 1000.0)),
        (protocol.birth_body("0.1.0", "virtual", 3, 812, None), read_status, lambda s: apply_birth(_CONN, DEV, s)),
    ):
        try:
            got = read(spelled(dict(base, **changes)), DEV)
        except Refused:
            continue
        known = {k: v for k, v in got.items() if k in base and k != "batt"}  # the rest is ignored
        if isinstance(got.get("batt"), dict):
            known.update({"batt." + k: v for k, v in got["batt"].items() if k in ("v", "pct")})
        assert holds_only_storable_values(known), got
        apply(got)

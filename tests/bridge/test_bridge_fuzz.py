"""Random and mutated payloads never crash the parser/authenticator and are never let through."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_bridge_stages import DEV, KEY, TOPIC, body, signed

from bridge import pipeline
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

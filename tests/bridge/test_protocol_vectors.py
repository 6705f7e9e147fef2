"""The golden vectors of docs/protocol-vectors.json, through the bridge's own code: every event frame
through `pipeline.admit` (the bridge's first four steps), every ack and command the vectors give the
inputs of built byte for byte by `stages/ack.py`, and the stage rule as the bridge applies it. The
firmware core checks the same file on both interpreters (tests/core/test_protocol.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import pipeline
from bridge.stages import ack
from firmware import protocol

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "docs" / "protocol-vectors.json").read_text(encoding="utf-8"))
FRAMES = VECTORS["frames"]


def payload(v: dict) -> bytes:
    return bytes.fromhex(v["payload_hex"]) if "payload_hex" in v else v["payload"].encode()


@pytest.mark.parametrize("v", [v for v in FRAMES if v["kind"] == "event"], ids=lambda v: v["name"])
def test_event_vector_through_the_bridge(v):
    key = bytes.fromhex(v["key"]) if v["key"] else None
    try:
        _, ev = pipeline.admit(v["topic"], payload(v), lambda dev: key)
        got = {"ok": True, "event": {k: ev[k] for k in ("id", "dev", "ctr", "type", "cause")}}
    except protocol.Refused as e:
        got = {"ok": False, "reason": e.reason}
    assert got == v["expect"]


@pytest.mark.parametrize("v", [v for v in FRAMES if v.get("built_from")], ids=lambda v: v["name"])
def test_bridge_builds_the_vector_bytes(v):
    b, key = v["built_from"], bytes.fromhex(v["key"])
    if v["kind"] == "ack":
        built = ack.ack_frame(key, b["eid"], b["stage"], incident=b.get("incident"), reason=b.get("reason"),
                              now=b["ts"])
    else:
        built = ack.command_frame(key, b["cmd"], b["ctr"], b["args"])
    assert bytes(built) == payload(v)


def test_stage_rule_as_the_bridge_applies_it():
    for new, old, want in VECTORS["stages"]["advances"]:
        if new in protocol.ACK_STAGES and (old is None or old in protocol.ACK_STAGES):
            assert ack.is_ahead(new, old) == want, (new, old)


def test_vectors_file_is_what_the_generator_writes():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_protocol_vectors.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

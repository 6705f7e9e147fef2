"""Stage 7, ack: signed ack frames (docs/protocol.md section 7) and signed commands (section 8)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

STAGES = ("stored", "forwarded", "accepted", "failed")
RANK = {s: i for i, s in enumerate(STAGES)}
COMMANDS = ("identify", "self-test", "silence", "reboot", "config")


def ack_topic(dev: str) -> str:
    return f"baochay/v1/{dev}/ack"


def cmd_topic(dev: str) -> str:
    return f"baochay/v1/{dev}/cmd"


def sign_frame(key: bytes, body: dict) -> bytes:
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b"\n" + hmac.new(key, raw, hashlib.sha256).hexdigest().encode()


def is_ahead(new: str, old: str | None) -> bool:
    """Stages only move forward; `failed` is final."""
    if old is None:
        return True
    if old in ("accepted", "failed"):
        return False
    return RANK[new] > RANK[old]


def ack_frame(key: bytes, event_id: str, stage: str, incident: str | None = None,
              reason: str | None = None, now: float | None = None) -> bytes:
    if stage not in RANK:
        raise ValueError(f"unknown stage {stage!r}")
    body: dict = {"v": 1, "id": event_id, "stage": stage}
    if stage == "accepted" and incident:
        body["incident"] = incident
    if stage == "failed":
        body["reason"] = (reason or "delivery failed")[:200]
    body["ts"] = int(now if now is not None else time.time())
    return sign_frame(key, body)


def command_frame(key: bytes, cmd: str, ctr: int, args: dict | None = None) -> bytes:
    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd!r} (known: {', '.join(COMMANDS)})")
    return sign_frame(key, {"v": 1, "cmd": cmd, "ctr": ctr, "args": args or {}})

"""Stage 7, ack: signed ack frames (docs/protocol.md section 7) and signed commands (section 8).

Bodies, stages and their order are firmware/protocol.py's and protocol_host.py's; this signs them.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from firmware import protocol_host


def ack_topic(dev: str) -> str:
    return protocol_host.topic(dev, "ack")


def cmd_topic(dev: str) -> str:
    return protocol_host.topic(dev, "cmd")


def sign_frame(key: bytes, body: dict) -> bytes:
    # protocol.dumps keeps non-ASCII as UTF-8 (a failure reason may quote a Vietnamese sink reply), as
    # the previous ensure_ascii=False did: the bytes MicroPython writes and reads back whole.
    raw = protocol_host.dumps(body)
    return bytes(protocol_host.frame(raw, lambda b: hmac.new(key, b, hashlib.sha256).hexdigest()))


def is_ahead(new: str, old: str | None) -> bool:
    """Stages only move forward; `accepted` is final, a late `accepted` still supersedes `failed`."""
    return protocol_host.advances(new, old)


def ack_frame(key: bytes, event_id: str, stage: str, incident: str | None = None,
              reason: str | None = None, now: float | None = None) -> bytes:
    ts = int(now if now is not None else time.time())
    return sign_frame(key, protocol_host.ack_body(event_id, stage, incident, reason, ts))


def command_frame(key: bytes, cmd: str, ctr: int, args: dict | None = None) -> bytes:
    return sign_frame(key, protocol_host.command_body(cmd, ctr, args))

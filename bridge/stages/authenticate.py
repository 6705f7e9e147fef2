"""Stage 2, authenticate: is this frame from the device it claims, and is it new, a duplicate or a replay?

`check_signature` runs on the MQTT thread (cheap: one HMAC). `classify` runs in the store writer, the
single place that knows what is stored, so two copies of one event can never both count as new.
"""

from __future__ import annotations

import hashlib
import hmac

from firmware.protocol import Refused

from .parse import Frame

NEW, DUPLICATE, REPLAY = "new", "duplicate", "replay"


def check_signature(frame: Frame, key_lookup) -> None:
    """Raise Refused unless the topic's device is registered and the HMAC over the body verifies.

    key_lookup(dev_id) -> 32-byte key or None.
    """
    key = key_lookup(frame.dev)
    if key is None:
        raise Refused("unknown-device")
    mac = hmac.new(key, frame.body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(mac, frame.sig):
        raise Refused("bad-signature")


def check_device(frame: Frame, event: dict) -> None:
    """The body's device must be the topic's device (the broker ACL vouches for the topic)."""
    if event["dev"] != frame.dev:
        raise Refused("device-mismatch")


def classify(body: bytes, ctr: int, stored_body: bytes | None, highest_ctr: int | None,
             reorder_window: int = 0) -> str:
    """docs/protocol.md section 4 'Delivery and replay rules'.

    stored_body: the body stored under this event id, if any; highest_ctr: the device's highest stored.
    reorder_window: 0 (one bridge) applies the rule strictly. With N > 0 (several bridges on a shared
    subscription, where one device's events may reach two processes and commit out of order), an event
    whose id was never stored and whose counter is at most N behind the highest is new: it was
    overtaken, not replayed (a replayed stored event is a duplicate).
    """
    if stored_body is not None and hmac.compare_digest(stored_body, body):
        return DUPLICATE
    if stored_body is None and (highest_ctr is None or ctr > highest_ctr):
        return NEW
    if stored_body is None and highest_ctr is not None and reorder_window > 0 and ctr > highest_ctr - reorder_window:
        return NEW
    return REPLAY

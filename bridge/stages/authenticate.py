"""Stage 2, authenticate: is this frame from the device it claims, and is it new, late, a duplicate or a conflict?

`check_signature` runs on the MQTT thread (cheap: one HMAC). `classify` runs in the store writer, the
single place that knows what is stored, so two copies of one event can never both count as new.
"""

from __future__ import annotations

import hashlib
import hmac

from firmware.protocol import Refused

from .parse import Frame

# new and late are stored and forwarded; a duplicate is acked again; a conflict is refused, and so is
# a frame from before the retention horizon (its stored copy was pruned: it cannot be told apart from a
# replay, and no alarm is still due after so long).
NEW, LATE, DUPLICATE, CONFLICT, FORGOTTEN = "new", "late", "duplicate", "conflict", "forgotten"


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
             pruned_through: int | None = None) -> str:
    """docs/protocol.md section 4 'Delivery and replay rules', within one install (epoch).

    stored_body: the body stored under this event id, if any; highest_ctr: the highest counter stored
    for the device's epoch. A correctly signed event that was never stored is always kept: above the
    highest it is new; at or below it, late (a lost frame sent again later, or two bridges committing
    out of order), forwarded all the same and marked so. Replaying a stored event gains nothing: it is
    a duplicate, acked again and never forwarded twice. The same id with other bytes is a conflict.
    pruned_through: the highest counter of this epoch whose event the retention policy deleted; a frame
    at or below it is forgotten (bridge/retention.py).
    """
    if stored_body is not None:
        return DUPLICATE if hmac.compare_digest(stored_body, body) else CONFLICT
    if pruned_through is not None and ctr <= pruned_through:
        return FORGOTTEN
    if highest_ctr is None or ctr > highest_ctr:
        return NEW
    return LATE

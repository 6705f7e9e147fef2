"""Stage 1, parse: topic and payload bytes -> a signed frame, and (after its HMAC checks) a valid event;
telemetry and status bodies -> valid dicts.

Split in two because the protocol checks the signature over the exact body bytes *before* the body is
parsed (docs/protocol.md section 3): `split_frame` runs first, `parse_event` only on an authentic body.
Every failure is a `protocol.Refused` with a short machine-readable reason, counted by the caller, and
every field that passes is within its range (docs/protocol.md section 11), so nothing later meets a
value the database or a sink cannot take.
The rules themselves are firmware/protocol.py's and protocol_host.py's: this module only shapes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware import protocol_host


@dataclass(frozen=True)
class Frame:
    dev: str  # device id from the topic
    kind: str  # event | telemetry | status
    body: bytes
    sig: bytes  # 64 lower-case hex digits, as bytes


def split_frame(topic: str, payload: bytes, max_payload: int = protocol_host.MAX_PAYLOAD,
                kinds: tuple[str, ...] = protocol_host.DEVICE_KINDS) -> Frame:
    """A publish -> Frame (not yet authenticated); Refused("bad-topic") unless a device topic of `kinds`."""
    dev, kind = protocol_host.split_topic(topic, kinds)
    body, sig = protocol_host.split_frame(payload, max_payload)
    return Frame(dev, kind, body, sig)


def parse_event(body: bytes) -> dict:
    """Authentic body bytes -> the event dict, validated against docs/protocol.md section 4."""
    return protocol_host.check_event(protocol_host.loads_object(body))


def read_object(payload: bytes, max_payload: int = protocol_host.MAX_PAYLOAD) -> dict:
    """An unsigned JSON payload -> dict; Refused when too large or not an object. No field is checked:
    read_telemetry and read_status are what the bridge takes a body through."""
    if len(payload) > max_payload:
        raise protocol_host.Refused("too-large", f"{len(payload)} bytes > {max_payload}")
    return protocol_host.loads_object(payload)


def read_telemetry(payload: bytes, dev: str, max_payload: int = protocol_host.MAX_PAYLOAD) -> dict:
    """A telemetry payload from device `dev` -> dict, checked against docs/protocol.md section 6."""
    return protocol_host.check_telemetry(read_object(payload, max_payload), dev)


def read_status(payload: bytes, dev: str, max_payload: int = protocol_host.MAX_PAYLOAD) -> dict:
    """A status payload (birth or last will) from device `dev` -> dict, checked against section 5."""
    return protocol_host.check_status(read_object(payload, max_payload), dev)

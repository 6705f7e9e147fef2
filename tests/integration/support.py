"""Helpers shared by the integration tests: an MQTT observer standing for the bridge side."""

from __future__ import annotations

import json

from firmware import protocol_host as protocol
from stack import observer as stack_observer
from stack.mosquitto import Mosquitto

TEST_USER = ("observer", "observer-password")
DEVICE_TOPICS = (protocol.every("event"), protocol.every("status"))


class Observer(stack_observer.Observer):
    """The harness's observer (stack/observer.py) standing for the bridge side, as TEST_USER; these
    tests see each message as (topic, payload, retained)."""

    def __init__(self, broker: Mosquitto, topics=DEVICE_TOPICS, ca=None):
        """With `ca`, connect to the broker's TLS listener and check its certificate against it."""
        super().__init__(broker.host, broker.tls_port if ca else broker.port, *TEST_USER, topics, ca=ca)

    def wait(self, pred, timeout=15.0, since=0):
        return tuple(super().wait(lambda m: pred(m[1:]), timeout, since)[1:])


def body_of(frame: bytes) -> dict:
    return json.loads(frame.split(b"\n", 1)[0])


def nmea(body: str) -> str:
    """An NMEA sentence with its checksum (the XOR of the bytes between `$` and `*`)."""
    cs = 0
    for c in body.encode():
        cs ^= c
    return f"${body}*{cs:02X}"

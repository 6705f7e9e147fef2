"""Helpers shared by the integration tests: an MQTT observer standing for the bridge side."""

from __future__ import annotations

import json
import ssl
import threading
import time

import paho.mqtt.client as mqtt

from firmware.protocol import PREFIX
from stack.mosquitto import Mosquitto

TEST_USER = ("observer", "observer-password")


class Observer:
    """A paho-mqtt client standing for the bridge side: records what arrives, can publish acks."""

    def __init__(self, broker: Mosquitto, topics=(PREFIX + "+/event", PREFIX + "+/status"), ca=None):
        """With `ca`, connect to the broker's TLS listener and check its certificate against it."""
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="observer-tls" if ca else "observer")
        self.c.username_pw_set(*TEST_USER)
        if ca:
            self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.c.connect(broker.host, broker.tls_port if ca else broker.port)
        self.c.loop_start()
        assert subscribed.wait(10), "observer could not subscribe" + (" over TLS" if ca else "")

    def _on_message(self, c, u, m):
        with self.cond:
            self.msgs.append((m.topic, m.payload, m.retain))
            self.cond.notify_all()

    def wait(self, pred, timeout=15.0):
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message in {timeout} s; got {[(t, p[:80]) for t, p, _ in self.msgs]}")
                self.cond.wait(left)

    def events(self, dev=None):
        out = []
        with self.cond:
            for t, p, _ in self.msgs:
                if t.endswith("/event") and (dev is None or t.split("/")[2] == dev):
                    out.append(p)
        return out

    def publish(self, topic, payload, qos=1):
        self.c.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def body_of(frame: bytes) -> dict:
    return json.loads(frame.split(b"\n", 1)[0])

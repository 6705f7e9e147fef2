"""An MQTT client on the bridge's side of the broker that records what crosses it, for the tests and
the HIL suite: every message with its arrival time, waits on them (no polling), publishes acks."""

from __future__ import annotations

import itertools
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt

from firmware import protocol_host as protocol

from .procs import Arrivals


class Seen(NamedTuple):
    t: float  # time.monotonic() at arrival
    topic: str
    payload: bytes
    retained: bool


class Observer:
    """Subscribes to `topics` (default: every device topic) as `user`. With `ca`, over TLS, checking
    the broker's certificate. `persistent`: a session the broker keeps, so what is published while
    the broker restarts still arrives; it connects in the background and retries. Otherwise start()
    returns once the subscription is acknowledged."""

    _ids = itertools.count(1)

    def __init__(self, host: str, port: int, user: str, password: str, topics: Sequence[str] = (protocol.ALL,),
                 *, ca: Path | None = None, persistent: bool = False, name: str = "observer"):
        self.creds = (host, port, user, password)
        self.topics, self.ca, self.persistent, self.name = tuple(topics), ca, persistent, name
        self._seen: Arrivals[Seen] = Arrivals()
        self.msgs = self._seen.items
        self.cond = self._seen.cond
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}-{next(self._ids)}",
                             clean_session=not persistent)
        self.c.reconnect_delay_set(1, 2)
        self.c.username_pw_set(user, password)
        if ca:
            self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        subscribed = threading.Event()
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        if persistent:
            self.c.connect_async(host, port, keepalive=10)
            self.c.loop_start()
        else:
            self.c.connect(host, port, keepalive=10)
            self.c.loop_start()
            if not subscribed.wait(10):
                self.close()
                raise AssertionError(f"{name} could not subscribe" + (" over TLS" if ca else ""))

    def _on_message(self, c, u, m) -> None:
        self._seen.add(Seen(time.monotonic(), m.topic, m.payload, bool(m.retain)))

    def wait(self, pred: Callable[[Seen], object], timeout: float = 20.0, since: int = 0) -> Seen:
        """The first message from index `since` for which pred(message) is true."""
        found = self._seen.first(pred, timeout, since)
        if found is None:
            with self.cond:
                seen = [(m.topic, m.payload[:100]) for m in self.msgs[-15:]]
            raise AssertionError(f"no matching MQTT message within {timeout:.0f} s; last seen: {seen}")
        return found

    def mark(self) -> int:
        """An index for `since`: only messages after now count."""
        return self._seen.mark()

    def bodies(self, topic: str, since: int = 0) -> list[dict]:
        """The JSON bodies seen on one topic (the body line of signed frames)."""
        with self.cond:
            return [json.loads(m.payload.split(b"\n", 1)[0]) for m in self.msgs[since:] if m.topic == topic]

    def events(self, dev: str | None = None, since: int = 0) -> list[bytes]:
        """The event frames seen, of one device or of all."""
        with self.cond:
            return [m.payload for m in self.msgs[since:] if m.topic.endswith("/event")
                    and (dev is None or m.topic == protocol.topic(dev, "event"))]

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.c.publish(topic, payload, qos=qos).wait_for_publish(5)

    def another(self) -> Observer:
        """A second, independent subscriber (e.g. to see what a late subscriber gets)."""
        return Observer(*self.creds, self.topics, ca=self.ca, persistent=self.persistent, name=self.name)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

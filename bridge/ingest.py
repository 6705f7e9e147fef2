"""The bridge's MQTT link: paho-mqtt 2.x, MQTT 5, a persistent session, manual PUBACKs.

Persistent session (clean_start False + a session expiry): what devices publish while the bridge is
away is queued by the broker and delivered when it returns. Manual acks: an event is PUBACKed only once
it is stored, so a bridge killed between receipt and commit gets it again from the broker.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware import protocol_host

log = logging.getLogger("bridge.mqtt")
lifecycle = logging.getLogger("bridge.lifecycle")  # always logged: orchestrators wait for "bridge ready"

FILTERS = tuple(protocol_host.every(k) for k in protocol_host.DEVICE_KINDS)


def state_topic(bridge_id: str) -> str:
    return protocol_host.bridge_topic(bridge_id, "state")


def health_topic(bridge_id: str) -> str:
    return protocol_host.bridge_topic(bridge_id, "health")


class MqttLink:
    def __init__(self, mcfg: dict, bridge_id: str, version: str, on_message: Callable[[mqtt.MQTTMessage], None]):
        self.cfg = mcfg
        self.bridge_id = bridge_id
        self.version = version
        self.on_message_cb = on_message
        self.ready = threading.Event()
        self.connected = threading.Event()
        # Since when (wall clock) and why the broker is out of reach; None while connected.
        self.down_since: float | None = time.time()
        self.down_reason = "not connected yet"
        self.generation = 0  # bumps on every connect: a PUBACK must go out on the connection it came in on
        c = self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=mcfg["client_id"],
                                      protocol=mqtt.MQTTv5, manual_ack=True)
        if mcfg.get("user"):
            c.username_pw_set(mcfg["user"], mcfg.get("password") or None)
        if mcfg.get("tls"):
            c.tls_set(ca_certs=mcfg.get("ca_file") or None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.will_set(state_topic(bridge_id), self._state_payload("offline"), qos=1, retain=True)
        c.max_inflight_messages_set(0)  # unbounded: paho rescans its whole outbox per PUBACK when capped
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        self._pending_sub: int | None = None

    def _state_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, "version": self.version, "ts": int(time.time())},
                          separators=(",", ":")).encode()

    def filters(self) -> list[str]:
        group = self.cfg.get("shared_group")
        return [f"$share/{group}/{f}" if group else f for f in FILTERS]

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = int(self.cfg.get("session_expiry_s", 86400))
        self.client.connect_async(self.cfg["host"], int(self.cfg["port"]), keepalive=int(self.cfg.get("keepalive", 30)),
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self, timeout: float = 3.0) -> None:
        if self.connected.is_set():
            info = self.client.publish(state_topic(self.bridge_id), self._state_payload("offline"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("mqtt connect refused", extra={"reason": str(reason_code)})
            self._down(f"connect refused: {reason_code}")
            return
        self.generation += 1
        self.connected.set()
        if self.down_since is not None:
            log.info("broker reachable again", extra={"down_s": round(time.time() - self.down_since, 1)})
        self.down_since = None
        _no_delay(client)
        log.info("mqtt connected", extra={"session_present": bool(flags.session_present),
                                          "host": self.cfg["host"], "port": self.cfg["port"]})
        client.publish(state_topic(self.bridge_id), self._state_payload("online"), qos=1, retain=True)
        result, mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters()])
        self._pending_sub = mid

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("mqtt subscription refused", extra={"reasons": bad})
            return
        if not self.ready.is_set():
            self.ready.set()
            lifecycle.info("bridge ready", extra={"filters": self.filters(), "bridge_id": self.bridge_id})
        else:
            log.info("resubscribed after reconnect")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        self._down(f"disconnected: {reason_code}")
        log.warning("mqtt disconnected; reconnecting", extra={"reason": str(reason_code)})

    def _on_connect_fail(self, client, userdata):
        self._down(f"cannot connect to {self.cfg['host']}:{self.cfg['port']}")

    def _down(self, reason: str) -> None:
        if self.down_since is None:
            self.down_since = time.time()
        self.down_reason = reason

    def _on_message(self, client, userdata, msg):
        try:
            self.on_message_cb(msg)
        except Exception:
            log.exception("message handler failed", extra={"topic": msg.topic})
            self.settle_now(msg)

    def settler(self, msg) -> Callable[[], None] | None:
        """A function that PUBACKs `msg` later (after its commit), or None for QoS 0."""
        if msg.qos == 0:
            return None
        gen, mid, qos = self.generation, msg.mid, msg.qos

        def settle():
            if gen == self.generation:
                self.client.ack(mid, qos)
        return settle

    def settle_now(self, msg) -> None:
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)


def _no_delay(client) -> None:
    """Acks are small and follow each other closely: without TCP_NODELAY the second one waits for the
    broker's delayed ACK of the first (40 ms on Linux). paho does not set it."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

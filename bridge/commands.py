"""Signed commands to one device (docs/protocol.md section 8), sent over a short MQTT connection."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from . import db
from .registry import Registry
from .stages.ack import cmd_topic, command_frame


def next_ctr(db_path: str, dev: str) -> int:
    """The bridge's millisecond clock, kept strictly increasing per device across runs."""
    conn = db.connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO device_state (id) VALUES (?)", (dev,))
        last = conn.execute("SELECT cmd_ctr FROM device_state WHERE id=?", (dev,)).fetchone()[0] or 0
        ctr = max(int(time.time() * 1000), last + 1)
        conn.execute("UPDATE device_state SET cmd_ctr=? WHERE id=?", (ctr, dev))
        conn.execute("COMMIT")
        return ctr
    finally:
        conn.close()


def send_command(cfg: dict, dev: str, cmd: str, args: dict | None = None, timeout: float = 10.0) -> int:
    reg = Registry(cfg["db"])
    try:
        device = reg.get(dev)
    finally:
        reg.close()
    if device is None:
        raise LookupError(f"device {dev!r} is not registered")
    ctr = next_ctr(cfg["db"], dev)
    frame = command_frame(device.key, cmd, ctr, args)
    m = cfg["mqtt"]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{m['client_id']}-cmd", protocol=mqtt.MQTTv5)
    if m.get("user"):
        c.username_pw_set(m["user"], m.get("password") or None)
    if m.get("tls"):
        c.tls_set(ca_certs=m.get("ca_file") or None)
    c.connect(m["host"], int(m["port"]), keepalive=30)
    c.loop_start()
    try:
        info = c.publish(cmd_topic(dev), frame, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError("the broker did not acknowledge the command")
    finally:
        c.disconnect()
        c.loop_stop()
    return ctr

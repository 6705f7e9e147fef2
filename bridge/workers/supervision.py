"""Supervision: which devices are online, judged by what they send, not by their TCP connection.

Any message from a device (event, telemetry heartbeat, status birth) counts as a sign of life. A device
silent longer than its class allows (mains 20 s, EN 50136-1 T6; battery much longer) is offline for the
operator even if a half-open TCP connection keeps the broker from firing its last will. The last will
(`status` offline) marks it offline at once. Transitions open and clear `offline` faults.

`Presence` decides (in memory, any thread); the `Ticker` thread sweeps it every `supervision.check_s`,
hands what changed to the store writer, keeps the gauges and publishes the bridge's health.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware import protocol_host

from ..clock import BridgeClock, move_stored_times
from ..faults import clear_fault, raise_fault

log = logging.getLogger("bridge")


@dataclass
class Transition:
    dev: str
    online: bool
    reason: str
    at: float


class Presence:
    def __init__(self, periods: dict[str, float], started_at: float | None = None):
        self.periods = dict(periods)  # supervision class -> seconds of silence allowed
        self.started_at = started_at or time.time()
        self._lock = threading.Lock()
        self.last_seen: dict[str, float] = {}
        self.online: dict[str, bool] = {}
        self._dirty: set[str] = set()

    def load(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            for r in conn.execute("SELECT id, online, last_seen FROM device_state"):
                if r["last_seen"] is not None:
                    self.last_seen[r["id"]] = r["last_seen"]
                self.online[r["id"]] = bool(r["online"])

    def seen(self, dev: str, now: float) -> Transition | None:
        """A sign of life (called on the MQTT thread); returns a transition when it came back."""
        with self._lock:
            self.last_seen[dev] = now
            self._dirty.add(dev)
            if not self.online.get(dev, False):
                self.online[dev] = True
                return Transition(dev, True, "heard from again", now)
        return None

    def gone(self, dev: str, now: float, reason: str) -> Transition | None:
        """The device's last will (or its own offline status) arrived."""
        with self._lock:
            if self.online.get(dev, True):
                self.online[dev] = False
                return Transition(dev, False, reason, now)
        return None

    def sweep(self, devices: list, now: float) -> list[Transition]:
        """devices: registry entries (with .id, .supervision). Silent ones past their period go offline."""
        out = []
        with self._lock:
            for d in devices:
                period = self.periods.get(d.supervision, self.periods.get("mains", 20))
                last = self.last_seen.get(d.id)
                baseline = max(last or 0.0, self.started_at)
                if self.online.get(d.id, True) and now - baseline > period:
                    self.online[d.id] = False
                    if last is None:
                        why = f"not heard from since the bridge started ({d.supervision} limit {period:g} s)"
                    else:
                        why = f"silent for {now - last:.0f} s ({d.supervision} limit {period:g} s)"
                    out.append(Transition(d.id, False, why, now))
        return out

    def rebase(self, now: float) -> None:
        """The bridge heard nothing for a while (its broker was away): count silence from now."""
        with self._lock:
            self.started_at = max(self.started_at, now)

    def shift(self, d: float) -> None:
        """The clock its times are read on followed a step of the system clock."""
        with self._lock:
            self.started_at += d
            self.last_seen = {k: v + d for k, v in self.last_seen.items()}

    def take_dirty(self) -> dict[str, float]:
        with self._lock:
            d = {k: self.last_seen[k] for k in self._dirty}
            self._dirty.clear()
        return d

    def counts(self, devices: list) -> tuple[int, int]:
        with self._lock:
            on = sum(1 for d in devices if self.online.get(d.id, False))
        return on, len(devices) - on


def ensure_state_row(conn: sqlite3.Connection, dev: str) -> None:
    conn.execute("INSERT OR IGNORE INTO device_state (id) VALUES (?)", (dev,))


def apply_transitions(conn: sqlite3.Connection, transitions: list[Transition]) -> None:
    for t in transitions:
        ensure_state_row(conn, t.dev)
        conn.execute("UPDATE device_state SET online=?, state_reason=? WHERE id=?",
                     (1 if t.online else 0, t.reason, t.dev))
        if t.online:
            clear_fault(conn, "offline", device=t.dev, now=t.at)
        else:
            raise_fault(conn, "offline", t.reason, device=t.dev, now=t.at)


def flush_last_seen(conn: sqlite3.Connection, seen: dict[str, float]) -> None:
    for dev, ts in seen.items():
        ensure_state_row(conn, dev)
        conn.execute("UPDATE device_state SET last_seen=MAX(COALESCE(last_seen, 0), ?) WHERE id=?", (ts, dev))


def _within(v, lo: float, hi: float, num: bool = False):
    """v when it is an int (any number when num) within lo..hi, else None. What reaches the two below
    has passed read_telemetry or read_status already; this keeps the store writer from ever meeting a
    value SQLite cannot take (an int past 64 bits, a lone surrogate) should a caller skip that."""
    ok = isinstance(v, (int, float) if num else int) and not isinstance(v, bool)
    return v if ok and lo <= v <= hi else None


def apply_telemetry(conn: sqlite3.Connection, dev: str, t: dict, low_battery_pct: float, now: float) -> None:
    """A checked telemetry body (read_telemetry) -> device_state and the `battery` fault; fields the
    bridge does not keep (readings, heap_peak, unknown ones) are ignored."""
    h = protocol_host
    ensure_state_row(conn, dev)
    b = t.get("batt")
    batt = b if isinstance(b, dict) else {}
    pct, volts = _within(batt.get("pct"), 0, 100, num=True), _within(batt.get("v"), 0, h.BATT_V_MAX, num=True)
    conn.execute(
        "UPDATE device_state SET rssi=?, batt_pct=?, batt_v=?, heap_free=?, outbox=?,"
        " boot=COALESCE(?, boot) WHERE id=?",
        (_within(t.get("rssi"), h.RSSI_MIN, h.RSSI_MAX), pct, volts, _within(t.get("heap_free"), 0, h.HEAP_MAX),
         _within(t.get("outbox"), 0, h.OUTBOX_MAX), _within(t.get("boot"), 0, h.BOOT_MAX), dev),
    )
    if pct is not None:
        if pct < low_battery_pct:
            raise_fault(conn, "battery", f"battery {pct:g} % (below {low_battery_pct:g} %)", device=dev, now=now)
        else:
            clear_fault(conn, "battery", device=dev, now=now)


def apply_birth(conn: sqlite3.Connection, dev: str, s: dict) -> None:
    """A checked birth (read_status) -> the firmware version and boot count in device_state."""
    h = protocol_host
    ensure_state_row(conn, dev)
    fw = s.get("fw") if h.valid_word(s.get("fw"), h.MAX_NAME, h.NAME_CHARS) else None
    conn.execute("UPDATE device_state SET fw=COALESCE(?, fw), boot=COALESCE(?, boot) WHERE id=?",
                 (fw, _within(s.get("boot"), 0, h.BOOT_MAX), dev))


class Ticker(threading.Thread):
    """The supervision ticker: presence sweep, gauges, registry reload, the bridge's health topic.

    backlogs: sink name -> a delivery worker of that sink (its backlog counts the whole sink);
    counts: the bridge's running totals, turned into rates; publish(topic, payload, qos).
    """

    def __init__(self, cfg: dict, bridge_id: str, version: str, *, registry, presence: Presence, writer, metrics,
                 conn: sqlite3.Connection, backlogs: dict, counts: dict, publish: Callable, shared: bool,
                 stopping: threading.Event, clock: BridgeClock | None = None, link=None, storage=None, flood=None,
                 tests=None, ota=None):
        super().__init__(name="supervision", daemon=True)
        self.cfg = cfg
        self.bridge_id = bridge_id
        self.version = version
        self.registry = registry
        self.presence = presence
        self.writer = writer
        self.metrics = metrics
        self.conn = conn
        self.backlogs = backlogs
        self.counts = counts
        self.publish = publish
        self.shared = shared
        self._stopping = stopping
        self.clock = clock or BridgeClock()
        self._following = False  # a step is being moved into the database: noticed once
        self.link = link  # the bridge's MQTT link (down_since, down_reason); None: always up
        self.ota = ota  # the OTA worker (its running rollouts for health), or None
        self._broker_was_down = False
        self._broker_said = 0.0  # monotonic time of the last "broker unreachable" log line
        self.storage = storage  # bridge/workers/storage_watch.py; None in tests that do without
        self.flood = flood  # bridge/workers/flood_watch.py; likewise
        self.tests = tests  # bridge/workers/test_watch.py; likewise

    def run(self) -> None:
        check_s = float(self.cfg["supervision"]["check_s"])
        health_s = float(self.cfg["health_s"])
        next_health = time.monotonic() + min(2.0, health_s)
        next_reload = time.monotonic() + 30
        last = (time.monotonic(), dict(self.counts))
        while not self._stopping.wait(check_s):
            try:
                if time.monotonic() > next_reload:
                    self.registry.reload()
                    next_reload = time.monotonic() + 30
                self.tick()
                if health_s > 0 and time.monotonic() >= next_health:
                    next_health = time.monotonic() + health_s
                    last = self.publish_health(last)
            except Exception:
                log.exception("supervision tick failed")

    def _peer_sightings(self) -> list:
        """With several processes each hears only part of a device's traffic: a sign of life another
        process wrote to the database (device_state.last_seen) counts here too, before the sweep."""
        out = []
        for r in self.conn.execute("SELECT id, last_seen FROM device_state WHERE last_seen IS NOT NULL"):
            if r["last_seen"] > self.presence.last_seen.get(r["id"], 0.0):
                t = self.presence.seen(r["id"], r["last_seen"])
                if t is not None:
                    out.append(t)
        return out

    def follow_clock_step(self) -> None:
        """The system clock stepped: move what the database holds, then let the bridge clock follow."""
        d = 0.0 if self._following else self.clock.pending_step()
        if not d:
            return
        self._following = True
        offset = self.clock.base + d

        def job(conn):
            moved = move_stored_times(conn, offset, self.clock.step_s)

            def after():
                self.presence.shift(d)
                self.clock.follow(d)
                self._following = False
                log.warning("system clock stepped: deadlines and signs of life moved with it, none failed or "
                            "frozen by it", extra={"step_s": round(d, 3), "moved_s": round(moved, 3)})
            return after
        self.writer.submit(job)

    def broker_state(self) -> str:
        """'connected', or 'unreachable since <unix time>: <why>' (kept in meta for `status`), with a
        log line a minute while it lasts and the gauge baochay_broker_up."""
        since = self.link.down_since if self.link is not None else None
        if self.metrics:
            self.metrics.broker_up.set(0 if since is not None else 1)
        if since is None:
            return "connected"
        if time.monotonic() - self._broker_said >= 60:
            self._broker_said = time.monotonic()
            log.error("broker unreachable: devices cannot be heard, nor judged offline, until it is back",
                      extra={"since_s": round(time.time() - since), "reason": self.link.down_reason})
        return f"unreachable since {since:.0f}: {self.link.down_reason}"

    def tick(self) -> None:
        if self.storage is not None:
            self.storage.tick()
        if self.flood is not None:
            self.flood.tick()
        self.follow_clock_step()
        now = self.clock()
        broker = self.broker_state()
        devices = self.registry.cached()
        back = self._peer_sightings() if self.shared else []
        if broker != "connected":
            # Our own outage, not theirs: no device is judged offline for what the bridge cannot hear.
            self._broker_was_down = True
            transitions = back
        else:
            if self._broker_was_down:  # back: every device gets a full period again, as after a start
                self._broker_was_down = False
                self.presence.rebase(now)
            transitions = back + self.presence.sweep(devices, now)
        for t in transitions:
            log.warning("device offline", extra={"device": t.dev, "reason": t.reason})
        seen = self.presence.take_dirty()

        def job(conn):
            apply_transitions(conn, transitions)
            flush_last_seen(conn, seen)
            conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('alive', ?), ('bridge_id', ?), ('version', ?),"
                         " ('broker', ?)", (str(now), self.bridge_id, self.version, broker))
        self.writer.submit(job, droppable=not transitions)
        if self.tests is not None:
            self.tests.tick(self.conn, now, self.presence.started_at, judge=broker == "connected")
        on, off = self.presence.counts(devices)
        self.metrics.devices.labels("online").set(on)
        self.metrics.devices.labels("offline").set(off)
        for name, w in self.backlogs.items():
            self.metrics.backlog.labels(name).set(w.backlog(self.conn))
        self.metrics.faults_open.set(self.conn.execute("SELECT COUNT(*) FROM faults WHERE open=1").fetchone()[0])
        self.metrics.store_queue.set(self.writer.backlog())

    def publish_health(self, last):
        t0, c0 = last
        t1, c1 = time.monotonic(), dict(self.counts)
        dt = max(1e-6, t1 - t0)
        on, off = self.presence.counts(self.registry.cached())
        body = {
            "v": protocol_host.VERSION, "bridge": self.bridge_id, "version": self.version, "ts": int(time.time()),
            "devices": {"online": on, "offline": off},
            "backlog": {name: w.backlog(self.conn) for name, w in self.backlogs.items()},
            "rates": {k + "_per_s": round((c1[k] - c0[k]) / dt, 2) for k in c1},
            "faults_open": self.conn.execute("SELECT COUNT(*) FROM faults WHERE open=1").fetchone()[0],
        }
        if self.tests is not None:
            body["tests_missed"] = self.tests.missed
        if self.storage is not None:
            body["storage"] = self.storage.health_part()
        if self.ota is not None and self.ota.summary:  # rollouts under way: version, state, devices by state
            body["ota"] = {str(k): v for k, v in self.ota.summary.items()}
        self.publish(protocol_host.bridge_topic(self.bridge_id, "health"), json.dumps(body, separators=(",", ":")).encode(),
                     qos=0)
        return t1, c1

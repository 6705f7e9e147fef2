"""Stage 6, deliver: one durable outbox per sink (rows of `deliveries`), one worker thread per sink.

A worker takes due rows oldest first, rebuilds the report (verify + enrich, so a cancel that arrived
meanwhile lowers the confidence of a retried alarm), calls `sink.send`, and records the outcome:
`accepted` -> done (the sink's ref is the 114 incident id); `retry` -> again after an exponential backoff
with jitter; `refused`, or no acceptance within `max_age_s` of receipt (EN 54-21: 100 s) -> `failed` and
an operator fault. Updates (cancel, restore) wait until the first event of their incident is settled at
this sink, so they can carry its incident id. Rows survive a crash; sinks are idempotent by event id.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import db
from ..faults import raise_fault
from ..registry import Registry
from ..report import Outcome, Report
from . import verify
from .ack import is_ahead
from .enrich import LocationPolicy, build_report

log = logging.getLogger("bridge.deliver")


@dataclass(frozen=True)
class DeliveryPolicy:
    max_age_s: float = 100.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    jitter: float = 0.25  # +/- fraction of each backoff
    batch: int = 100

    def backoff(self, attempts: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** max(0, attempts - 1)))
        return max(0.01, base * (1 + self.jitter * random.uniform(-1.0, 1.0)))


@dataclass(frozen=True)
class VerifyPolicy:
    window_s: float = 120.0
    offline_window_s: float = 600.0


# on_stage(dev, event_id, stage, incident, reason): the device-facing ack (only for the acked sink)
StageFn = Callable[[str, str, str, "str | None", "str | None"], None]


def gather_context(conn: sqlite3.Connection, ev_row, building: str, policy: VerifyPolicy) -> verify.Context:
    """What verify needs to know around one stored event."""
    ctx = verify.Context(window_s=policy.window_s, building=building)
    t = ev_row["received_at"]
    if building:
        rows = conn.execute(
            "SELECT DISTINCT dev FROM events WHERE building=? AND received_at BETWEEN ? AND ? AND dev<>? "
            "AND type IN ('alarm','prealarm') LIMIT 10",
            (building, t - policy.window_s, t + policy.window_s, ev_row["dev"]),
        ).fetchall()
        ctx.corroborating = [r["dev"] for r in rows]
    ctx.open_faults = [r["kind"].split(":", 1)[1] for r in conn.execute(
        "SELECT kind FROM faults WHERE open=1 AND device=? AND kind LIKE 'device:%'", (ev_row["dev"],))]
    ctx.open_faults = [k for k in ctx.open_faults if k in verify.SENSOR_FAULTS]
    ctx.was_offline = conn.execute(
        "SELECT 1 FROM faults WHERE kind='offline' AND device=? AND (open=1 OR cleared_at>?) LIMIT 1",
        (ev_row["dev"], t - policy.offline_window_s),
    ).fetchone() is not None
    cancel = conn.execute(
        "SELECT id FROM events WHERE ref=? AND type='cancel' LIMIT 1", (ev_row["id"],)).fetchone()
    ctx.cancelled_by = cancel["id"] if cancel else None
    return ctx


class DeliveryWorker(threading.Thread):
    def __init__(self, sink, db_path, registry: Registry, *, acked: bool, on_stage: StageFn,
                 policy: DeliveryPolicy | None = None, location: LocationPolicy | None = None,
                 verify_policy: VerifyPolicy | None = None, metrics=None, clock=time.time):
        super().__init__(name=f"deliver-{sink.name}", daemon=True)
        self.sink = sink
        self.name_ = sink.name
        self.db_path = db_path
        self.registry = registry
        self.acked = acked
        self.on_stage = on_stage
        self.policy = policy or DeliveryPolicy()
        self.location = location or LocationPolicy()
        self.verify_policy = verify_policy or VerifyPolicy()
        self.metrics = metrics
        self.clock = clock
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self.conn: sqlite3.Connection | None = None
        self.last_error = ""

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def run(self) -> None:
        self.conn = db.connect(self.db_path, durable=False)
        while not self._stopping.is_set():
            try:
                n = self.pump()
            except Exception:
                log.exception("delivery worker %s: unexpected error", self.name_)
                n = 0
            if n == 0:
                self.wake.wait(self._idle_wait())
                self.wake.clear()
        try:
            self.sink.close()
        except Exception:
            log.exception("closing sink %s", self.name_)
        self.conn.close()

    def _idle_wait(self) -> float:
        row = self.conn.execute(
            "SELECT MIN(next_at) FROM deliveries WHERE sink=? AND state='pending'", (self.name_,)).fetchone()
        if row[0] is None:
            return 1.0
        return max(0.005, min(1.0, row[0] - self.clock()))

    def backlog(self, conn=None) -> int:
        c = conn or self.conn
        return c.execute("SELECT COUNT(*) FROM deliveries WHERE sink=? AND state='pending'",
                         (self.name_,)).fetchone()[0]

    def pump(self) -> int:
        """Handle the rows due now; returns how many were handled (sent or settled)."""
        conn = self.conn
        now = self.clock()
        rows = conn.execute(
            "SELECT d.event_id, d.attempts, d.created_at, d.last_error, e.* FROM deliveries d "
            "JOIN events e ON e.id=d.event_id WHERE d.sink=? AND d.state='pending' AND d.next_at<=? "
            "ORDER BY d.seq LIMIT ?",
            (self.name_, now, self.policy.batch),
        ).fetchall()
        handled = 0
        for row in rows:
            if self._stopping.is_set():
                break
            if self._handle(row):
                handled += 1
        return handled

    def _handle(self, row) -> bool:
        conn = self.conn
        eid, dev = row["event_id"], row["dev"]
        deadline = row["created_at"] + self.policy.max_age_s
        if self.clock() >= deadline:
            why = f"not accepted by {self.name_} within {self.policy.max_age_s:.0f} s"
            if row["last_error"]:
                why += f" (last error: {row['last_error']})"
            self._fail(row, why)
            return True
        incident_id = None
        if row["incident_key"] != eid:
            parent = conn.execute("SELECT state, ref FROM deliveries WHERE sink=? AND event_id=?",
                                  (self.name_, row["incident_key"])).fetchone()
            if parent is not None and parent["state"] == "pending":
                return False  # wait for the incident's first event to settle here
            incident_id = parent["ref"] if parent is not None else None
        report = self._report(row, incident_id)
        if report is None:
            self._fail(row, "device no longer registered")
            return True
        if row["attempts"] == 0:
            conn.execute("UPDATE deliveries SET first_attempt_at=? WHERE sink=? AND event_id=?",
                         (self.clock(), self.name_, eid))
            if self.acked:
                self._stage(dev, eid, "forwarded")
        try:
            outcome = self.sink.send(report)
            if not isinstance(outcome, Outcome):
                outcome = Outcome.retry(f"sink returned {type(outcome).__name__}, not an Outcome")
        except Exception as e:  # a sink bug or a network error: retry, keep the worker alive
            outcome = Outcome.retry(f"{type(e).__name__}: {e}")
        now = self.clock()
        if self.metrics:
            self.metrics.deliveries.labels(self.name_, outcome.status).inc()
        if outcome.status == "accepted":
            conn.execute(
                "UPDATE deliveries SET state='accepted', attempts=attempts+1, done_at=?, ref=?, last_error=NULL"
                " WHERE sink=? AND event_id=?", (now, outcome.ref, self.name_, eid))
            self.last_error = ""
            if self.metrics:
                self.metrics.delivery_latency.labels(self.name_).observe(max(0.0, now - row["received_at"]))
            if self.acked:
                self._stage(dev, eid, "accepted", incident=outcome.ref or row["incident"])
        elif outcome.status == "refused":
            self._fail(row, f"refused by {self.name_}: {outcome.detail}")
        else:
            attempts = row["attempts"] + 1
            nxt = min(now + self.policy.backoff(attempts), deadline)
            self.last_error = outcome.detail
            conn.execute(
                "UPDATE deliveries SET attempts=?, next_at=?, last_error=? WHERE sink=? AND event_id=?",
                (attempts, nxt, outcome.detail[:300], self.name_, eid))
            log.warning("delivery to %s will retry", self.name_,
                        extra={"event": eid, "attempt": attempts, "detail": outcome.detail[:200]})
        return True

    def _report(self, row, incident_id) -> Report | None:
        device = self.registry.get(row["dev"])
        if device is None:
            return None
        event = json.loads(row["body"])
        ctx = gather_context(self.conn, row, device.building, self.verify_policy)
        confidence, reasons = verify.assess(event, ctx)
        return build_report(event, device, row["received_at"], row["incident_key"], confidence, reasons,
                            self.location, incident_id=incident_id)

    def _fail(self, row, why: str) -> None:
        conn, eid = self.conn, row["event_id"]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE deliveries SET state='failed', done_at=?, last_error=? WHERE sink=? AND event_id=?",
                         (self.clock(), why[:300], self.name_, eid))
            raise_fault(conn, "delivery", f"{row['type']} {eid}: {why}", device=row["dev"], sink=self.name_,
                        unique=False)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.last_error = why
        if self.metrics:
            self.metrics.deliveries.labels(self.name_, "failed").inc()
        log.error("delivery failed", extra={"sink": self.name_, "event": eid, "reason": why})
        if self.acked:
            self._stage(row["dev"], eid, "failed", reason=why)

    def _stage(self, dev: str, eid: str, stage: str, incident: str | None = None, reason: str | None = None):
        """Record the device-facing stage (forward only) and publish the ack."""
        row = self.conn.execute("SELECT stage FROM events WHERE id=?", (eid,)).fetchone()
        if row is None or not is_ahead(stage, row["stage"]):
            return
        self.conn.execute("UPDATE events SET stage=?, stage_at=?, incident=COALESCE(?, incident), reason=?"
                          " WHERE id=?", (stage, self.clock(), incident, reason, eid))
        self.on_stage(dev, eid, stage, incident, reason)

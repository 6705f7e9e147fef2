"""The delivery workers: one durable outbox per sink (rows of `deliveries`), one or more workers per sink.

A worker takes due rows oldest first, rebuilds the report (bridge/pipeline.py `report_for`: verify, then
enrich, so a cancel that arrived meanwhile lowers the confidence of a retried alarm), calls `sink.send`,
and records what the outcome means (bridge/stages/deliver.py): done, again after a backoff, or `failed`
and an operator fault, and then again, more slowly, until a late acceptance (which clears the fault),
an operator's `alarms close`, or the horizon. Updates (cancel, restore) wait until the first event of their incident is settled
at this sink, so they can carry its incident id. Rows survive a crash; sinks are idempotent by event id.

Outcomes are written in one short transaction per few milliseconds of sending (never held open across
a send), and the device acks go out after that commit.
With N workers per sink, worker i owns the incidents whose key hashes to i, so every event of one
incident (an alarm, then its cancel) is still handled by one worker, in order.

Several bridge processes on one database (claim_s > 0): a worker claims the rows it is about to send in
one short transaction, by moving their `next_at` a lease (`claim_s`) into the future, so no other
process's worker selects them meanwhile; the lease is renewed while a long batch is sent, and rows the
worker did not get to are handed back at once. A process that dies mid-send leaves its claimed rows due
again when the lease ends (sent again then: sinks are idempotent by event id).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from .. import db, facilities, pipeline
from ..faults import clear_event, raise_fault
from ..registry import Registry
from ..report import Outcome, Report
from ..stages import verify
from ..stages.ack import is_ahead
from ..stages.deliver import DeliveryPolicy, after_send, expired, incident_part, overdue
from ..stages.enrich import LocationPolicy
from ..stages.verify import VerifyPolicy
from ..storage import StorageHealth, is_storage_error

log = logging.getLogger("bridge.deliver")

# on_stage(dev, event_id, stage, incident, reason): the device-facing ack (only for the acked sink)
StageFn = Callable[[str, str, str, "str | None", "str | None"], None]

CONTEXT_FRESH_S = 1.0  # a batch's verify context is reused for this long, then gathered again per row
FLUSH_S = 0.01  # write outcomes and send acks at least this often while a batch is being sent
CLAIM_S = 20.0  # lease on claimed rows with several bridge processes; longer than any sink's timeout
DB_BACKOFF_MAX_S = 5.0  # the longest wait between tries while the database fails


def gather_contexts(conn: sqlite3.Connection, rows: list, building_of: Callable[[str], str],
                    policy: VerifyPolicy) -> dict[str, verify.Context]:
    """The verify context of each event row, event id -> Context, in four queries for the whole batch
    (not four per row): each SQLite call gives up the GIL and waits to get it back, which under load
    costs more than the query. One row or a hundred, the rules are verify.context_of's."""
    if not rows:
        return {}
    devs = sorted({r["dev"] for r in rows})
    w = policy.window_s
    # corroboration: alarms/prealarms per building over the batch's whole window, then per row
    near: dict[str, dict[str, list[float]]] = {}
    by_building: dict[str, list] = {}
    for r in rows:
        b = building_of(r["dev"])
        if b:
            by_building.setdefault(b, []).append(r["received_at"])
    for b, times in by_building.items():
        seen = near.setdefault(b, {})
        for e in conn.execute(
                "SELECT dev, received_at FROM events WHERE building=? AND received_at BETWEEN ? AND ? "
                "AND type IN ('alarm','prealarm')", (b, min(times) - w, max(times) + w)):
            seen.setdefault(e["dev"], []).append(e["received_at"])
        for ts in seen.values():
            ts.sort()
    marks = ",".join("?" for _ in devs)
    faults: dict[str, list[str]] = {}
    for f in conn.execute(f"SELECT device, kind FROM faults WHERE open=1 AND device IN ({marks}) "
                          "AND kind LIKE 'device:%'", devs):
        faults.setdefault(f["device"], []).append(f["kind"].split(":", 1)[1])
    oldest = min(r["received_at"] for r in rows) - policy.offline_window_s
    offline: dict[str, list] = {}
    for f in conn.execute(f"SELECT device, open, cleared_at FROM faults WHERE kind='offline' "
                          f"AND device IN ({marks}) AND (open=1 OR cleared_at>?)", (*devs, oldest)):
        offline.setdefault(f["device"], []).append((f["open"], f["cleared_at"]))
    ids = [r["id"] for r in rows]
    cancels: dict[str, str] = {}
    for c in conn.execute(f"SELECT ref, id FROM events WHERE type='cancel' AND ref IN "
                          f"({','.join('?' for _ in ids)}) ORDER BY seq", ids):
        cancels.setdefault(c["ref"], c["id"])
    out = {}
    for r in rows:
        b = building_of(r["dev"])
        out[r["id"]] = verify.context_of(r["dev"], r["received_at"], b, policy, alarms=near.get(b, {}),
                                         device_faults=faults.get(r["dev"], []),
                                         offline=offline.get(r["dev"], []), cancelled_by=cancels.get(r["id"]))
    return out


class _Outcomes:
    """What a batch of sends decided, waiting for one commit: row writes, then device-facing stages."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, tuple]] = []
        self.stages: list[tuple[str, str, str, str | None, str | None]] = []
        self.failures: list[tuple[sqlite3.Row, str, float | None]] = []  # (row, why, sent again at)
        self.expired: list[tuple[sqlite3.Row, str]] = []  # given up: the horizon passed
        self.late: list[tuple[sqlite3.Row, float]] = []  # accepted after failing

    def __bool__(self) -> bool:
        return bool(self.writes or self.stages or self.failures or self.expired or self.late)


class DeliveryWorker(threading.Thread):
    def __init__(self, sink, db_path, registry: Registry, *, acked: bool, on_stage: StageFn,
                 policy: DeliveryPolicy | None = None, location: LocationPolicy | None = None,
                 verify_policy: VerifyPolicy | None = None, metrics=None, clock=time.time,
                 part: tuple[int, int] = (0, 1), claim_s: float = 0.0, health: StorageHealth | None = None):
        index, parts = part
        super().__init__(name=f"deliver-{sink.name}" + (f"-{index}" if parts > 1 else ""), daemon=True)
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
        self.part = (index, parts)
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._conn: sqlite3.Connection | None = None
        self._contexts: dict[str, verify.Context] = {}
        self._contexts_at = 0.0
        self.last_error = ""
        self.claim_s = float(claim_s)  # 0: the only process on this database, no claims needed
        self._claim: dict[str, float] = {}  # rows claimed and not yet handled: event id -> their due time
        self._claim_until = 0.0
        self._claimed_at = 0.0
        self.health = health or StorageHealth()
        self._unflushed: list[_Outcomes] = []  # decided, not yet written: the database failed

    @property
    def conn(self) -> sqlite3.Connection:
        """The worker's database connection; a clear error when used before start() opens it."""
        if self._conn is None:
            raise RuntimeError(f"delivery worker {self.name_}: the database is not open")
        return self._conn

    @conn.setter
    def conn(self, c: sqlite3.Connection | None) -> None:
        self._conn = c
        if c is not None and self.part[1] > 1:
            parts = self.part[1]
            c.create_function("incident_part", 1, lambda k: incident_part(k, parts), deterministic=True)

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def run(self) -> None:
        self.conn = db.connect(self.db_path, durable=False)
        backoff = 0.0
        while not self._stopping.is_set():
            self.wake.clear()  # before the pump: a wake that comes during it is not lost
            try:
                n = self.pump()
                wait = self._idle_wait() if n == 0 else 0.0
                backoff = 0.0
                self.health.succeeded(self.name)
            except Exception as e:
                # never spin: the database may be full or locked (then the outcomes already decided are
                # kept and written first, nothing is sent twice for it), or a bug hit one row
                backoff = min(DB_BACKOFF_MAX_S, max(0.1, backoff * 2))
                if is_storage_error(e):
                    self.health.failed(self.name, e)
                    log.error("delivery worker %s: cannot use the database; again in %.1f s", self.name_,
                              backoff, extra={"detail": f"{type(e).__name__}: {e}"[:200]})
                else:
                    log.exception("delivery worker %s: unexpected error", self.name_)
                wait = backoff
            if backoff:
                self._stopping.wait(wait)
            elif wait:
                self.wake.wait(wait)
        try:
            self.sink.close()
        except Exception:
            log.exception("closing sink %s", self.name_)
        self.conn.close()

    def _building_of(self, dev: str) -> str:
        d = self.registry.get(dev)
        return d.building if d is not None else ""

    def _mine(self) -> tuple[str, tuple]:
        """SQL condition (on deliveries d joined with events e) selecting this worker's incidents."""
        index, parts = self.part
        if parts == 1:
            return "", ()
        return " AND incident_part(e.incident_key)=?", (index,)

    def _idle_wait(self) -> float:
        cond, args = self._mine()
        row = self.conn.execute(
            "SELECT MIN(d.next_at) FROM deliveries d JOIN events e ON e.id=d.event_id"
            " WHERE d.sink=? AND d.state='pending'" + cond, (self.name_, *args)).fetchone()
        if row[0] is None:
            return 1.0
        return max(0.005, min(1.0, row[0] - self.clock()))

    def backlog(self, conn=None) -> int:
        """Reports waiting at this sink (all of its workers)."""
        c = conn or self.conn
        return c.execute("SELECT COUNT(*) FROM deliveries WHERE sink=? AND state='pending'",
                         (self.name_,)).fetchone()[0]

    def _due_rows(self) -> list:
        """The rows due now, oldest first; claimed for this worker when other processes share the database."""
        conn = self.conn
        now = self.clock()
        cond, args = self._mine()
        sql = ("SELECT d.event_id, d.attempts, d.created_at, d.last_error, d.next_at AS due_at, d.failed_at,"
               " e.* FROM deliveries d "
               "JOIN events e ON e.id=d.event_id WHERE d.sink=? AND d.state='pending' AND d.next_at<=?" + cond +
               " ORDER BY d.seq LIMIT ?")
        params = (self.name_, now, *args, self.policy.batch)
        if not self.claim_s:
            return conn.execute(sql, params).fetchall()
        until = now + self.claim_s
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.executemany("UPDATE deliveries SET next_at=? WHERE sink=? AND event_id=?",
                             [(until, self.name_, r["event_id"]) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._claim = {r["event_id"]: r["due_at"] for r in rows}
        self._claim_until, self._claimed_at = until, time.monotonic()
        return rows

    def _renew_claim(self) -> None:
        """Inside a transaction: push the lease of the rows still waiting in this batch."""
        if not self._claim or time.monotonic() - self._claimed_at < self.claim_s / 3:
            return
        until = self.clock() + self.claim_s
        self.conn.executemany(
            "UPDATE deliveries SET next_at=? WHERE sink=? AND event_id=? AND state='pending' AND next_at=?",
            [(until, self.name_, eid, self._claim_until) for eid in self._claim])
        self._claim_until, self._claimed_at = until, time.monotonic()

    def _release_claim(self) -> None:
        """Hand back, due as before, the claimed rows this batch did not handle."""
        claim, self._claim = self._claim, {}
        if not claim:
            return
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "UPDATE deliveries SET next_at=? WHERE sink=? AND event_id=? AND state='pending' AND next_at=?",
                [(due, self.name_, eid, self._claim_until) for eid, due in claim.items()])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def pump(self) -> int:
        """Handle the rows due now; returns how many were handled (sent or settled)."""
        while self._unflushed:  # decided before the database failed: write them before sending more
            self._flush(self._unflushed[0])
        conn = self.conn
        rows = self._due_rows()
        handled = 0
        out = _Outcomes()
        self._contexts = gather_contexts(conn, rows, self._building_of, self.verify_policy)
        self._contexts_at = time.monotonic()
        flushed_at = time.monotonic()
        try:
            for row in rows:
                if self._stopping.is_set():
                    break
                if out and row["incident_key"] != row["event_id"]:
                    self._flush(out)  # an update looks at its incident's row: let it see this batch's outcome
                    out = _Outcomes()
                if self._handle(row, out):
                    handled += 1
                    self._claim.pop(row["event_id"], None)
                if out and time.monotonic() - flushed_at >= FLUSH_S:
                    self._flush(out)
                    out = _Outcomes()
                    flushed_at = time.monotonic()
        finally:
            if out:
                self._flush(out)
            self._release_claim()
        return handled

    def _handle(self, row, out: _Outcomes) -> bool:
        conn = self.conn
        eid, dev = row["event_id"], row["dev"]
        failed = row["failed_at"] is not None
        if failed:
            why = expired(row["created_at"], self.clock(), self.policy, self.name_, row["last_error"])
            if why is not None:
                out.expired.append((row, why))
                return True
        else:
            why = overdue(row["created_at"], self.clock(), self.policy, self.name_, row["last_error"])
            if why is not None:
                out.failures.append((row, why, self.clock()))  # told now; sent again at once
                return True
        incident_id = None
        if row["incident_key"] != eid:
            parent = conn.execute("SELECT state, ref, failed_at FROM deliveries WHERE sink=? AND event_id=?",
                                  (self.name_, row["incident_key"])).fetchone()
            if parent is not None and parent["state"] == "pending" and parent["failed_at"] is None:
                return False  # wait for the incident's first event to settle here (not past its deadline)
            incident_id = parent["ref"] if parent is not None else None
        report = self._report(row, incident_id)
        if report is None:
            out.expired.append((row, "device no longer registered"))
            return True
        first = row["attempts"] == 0
        started = self.clock()
        try:
            outcome = self.sink.send(report)
            if not isinstance(outcome, Outcome):
                outcome = Outcome.retry(f"sink returned {type(outcome).__name__}, not an Outcome")
        except Exception as e:  # a sink bug or a network error: retry, keep the worker alive
            outcome = Outcome.retry(f"{type(e).__name__}: {e}")
        now = self.clock()
        if first:
            out.writes.append(("UPDATE deliveries SET first_attempt_at=? WHERE sink=? AND event_id=?",
                               (started, self.name_, eid)))
        if self.metrics:
            self.metrics.deliveries.labels(self.name_, outcome.status).inc()
        d = after_send(outcome, row["attempts"], now, row["created_at"], self.policy, self.name_, failed=failed)
        if d.state == "accepted":
            out.writes.append((
                "UPDATE deliveries SET state='accepted', attempts=attempts+1, done_at=?, ref=?, last_error=NULL"
                " WHERE sink=? AND event_id=?", (now, d.ref, self.name_, eid)))
            self.last_error = ""
            if self.metrics:
                self.metrics.delivery_latency.labels(self.name_).observe(max(0.0, now - row["received_at"]))
            if self.acked and d.stage:
                out.stages.append((dev, eid, d.stage, d.ref or row["incident"], None))
            if failed:
                out.late.append((row, now))
        elif d.state == "failed":
            out.failures.append((row, d.why, d.next_at))  # its `failed` stage is told after the commit
        else:
            self.last_error = d.why
            out.writes.append((
                "UPDATE deliveries SET attempts=?, next_at=?, last_error=? WHERE sink=? AND event_id=?",
                (d.attempts, d.next_at, d.why[:300], self.name_, eid)))
            if d.stage and self.acked:
                out.stages.append((dev, eid, d.stage, None, None))
            if not failed:  # after the failure its fault says it, not a log line a minute for hours
                log.warning("delivery to %s will retry", self.name_,
                            extra={"event": eid, "attempt": d.attempts, "detail": d.why[:200]})
        return True

    def _report(self, row, incident_id) -> Report | None:
        device = self.registry.get(row["dev"])
        if device is None:
            return None
        ctx = self._contexts.pop(row["id"], None)
        if ctx is None or time.monotonic() - self._contexts_at > CONTEXT_FRESH_S:  # slow sends: look again
            ctx = gather_contexts(self.conn, [row], lambda dev: device.building, self.verify_policy)[row["id"]]
        return pipeline.report_for(json.loads(row["body"]), device, ctx, row["received_at"], row["incident_key"],
                                   self.location, incident_id=incident_id, late=row["late"],
                                   facility=facilities.record_of(self.conn, device.building))

    def _flush(self, out: _Outcomes) -> None:
        """Write a batch's outcomes in one transaction, then tell the devices (after the commit). When
        the transaction fails the outcomes are kept, to be written before anything is sent again."""
        conn = self.conn
        stages = list(out.stages)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._keep(out)
            raise
        try:
            for sql, params in out.writes:
                conn.execute(sql, params)
            for row, why, again_at in out.failures:
                self._record_failure(row, why, again_at)
                if self.acked:
                    stages.append((row["dev"], row["event_id"], "failed", None, why))
            for row, why in out.expired:
                self._record_expiry(row, why)
            for row, _at in out.late:  # accepted after all: the operator's fault about it is over
                clear_event(conn, "delivery", row["event_id"], sink=self.name_)
            acks = [st for st in stages if self._record_stage(*st)]
            if self.claim_s:
                self._renew_claim()
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT may have rolled back already
            self._keep(out)
            raise
        if out in self._unflushed:
            self._unflushed.remove(out)
        for row, why, _again in out.failures:
            self.last_error = why
            if self.metrics:
                self.metrics.deliveries.labels(self.name_, "failed").inc()
            log.error("delivery failed; the device is told, sending goes on",
                      extra={"sink": self.name_, "event": row["event_id"], "reason": why})
        for row, why in out.expired:
            self.last_error = why
            if self.metrics:
                self.metrics.deliveries.labels(self.name_, "expired").inc()
            log.error("delivery given up", extra={"sink": self.name_, "event": row["event_id"], "reason": why})
        for row, at in out.late:
            if self.metrics:
                self.metrics.deliveries.labels(self.name_, "accepted_late").inc()
            log.warning("accepted late, after the device was told failed",
                        extra={"sink": self.name_, "event": row["event_id"],
                               "late_s": round(at - row["created_at"], 1)})
        for st in acks:
            self.on_stage(*st)

    def _keep(self, out: _Outcomes) -> None:
        if out not in self._unflushed:
            self._unflushed.append(out)

    def _record_failure(self, row, why: str, again_at: float | None) -> None:
        """Failed in time: the fault is raised and the device told, and the row stays pending."""
        eid = row["event_id"]
        now = self.clock()
        self.conn.execute(
            "UPDATE deliveries SET failed_at=?, next_at=?, last_error=? WHERE sink=? AND event_id=?",
            (now, now if again_at is None else again_at, why[:300], self.name_, eid))
        raise_fault(self.conn, "delivery", f"{row['type']} {eid}: {why}; still trying", device=row["dev"],
                    sink=self.name_, unique=False, event=eid)

    def _record_expiry(self, row, why: str) -> None:
        eid = row["event_id"]
        self.conn.execute(
            "UPDATE deliveries SET state='failed', done_at=?, last_error=? WHERE sink=? AND event_id=?",
            (self.clock(), why[:300], self.name_, eid))
        clear_event(self.conn, "delivery", eid, sink=self.name_)  # replaced by the final word
        raise_fault(self.conn, "delivery", f"{row['type']} {eid}: {why}", device=row["dev"], sink=self.name_,
                    unique=False, event=eid)

    def _record_stage(self, dev: str, eid: str, stage: str, incident: str | None, reason: str | None) -> bool:
        """Record the device-facing stage (forward only); True when the device should be told."""
        row = self.conn.execute("SELECT stage FROM events WHERE id=?", (eid,)).fetchone()
        if row is None or not is_ahead(stage, row["stage"]):
            return False
        self.conn.execute("UPDATE events SET stage=?, stage_at=?, incident=COALESCE(?, incident), reason=?"
                          " WHERE id=?", (stage, self.clock(), incident, reason, eid))
        return True

"""Stage 3, store: one writer thread, group commit.

Everything that changes the database on the ingest path goes through this thread's queue: events,
telemetry, presence, rejects. It takes what is queued (up to `batch_max`), applies it in one
transaction, commits (fsynced: synchronous=FULL), and only then runs the items' after-commit actions:
the `stored` ack to the device, the MQTT PUBACK to the broker, waking the delivery workers. So a storm
costs one fsync per batch, not one per alarm, and nothing is acked before it is on disk.

Several bridge processes may share one database (docs/operator-guide.md, several instances): every
new/late/duplicate/conflict decision is made inside the write transaction (BEGIN IMMEDIATE) from what the
database holds, never from a per-process cache, so another process's commit is always seen.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import db
from ..faults import clear_fault, raise_fault
from ..stages.authenticate import CONFLICT, DUPLICATE, LATE, NEW, classify
from ..stages.parse import Frame

log = logging.getLogger("bridge.store")

After = Callable[[], None]


@dataclass
class Incoming:
    """An authentic, well-formed event waiting to be stored."""

    frame: Frame
    event: dict
    received_at: float
    settle: Callable[[], None] | None = None  # tells the broker we have it (MQTT PUBACK), after commit


@dataclass
class StoredResult:
    verdict: str  # new | late | duplicate | conflict
    # Stored, but worth the operator's eye: why it is late, or that a device began a new install.
    event_id: str
    dev: str
    stage: str | None = None
    incident: str | None = None
    reason: str | None = None
    event: dict | None = None
    late: str | None = None
    new_epoch: str | None = None  # the device's previous epoch, when this event began a new install


class StoreWriter(threading.Thread):
    """on_result(StoredResult) runs after the commit, in this thread, for every event handled."""

    def __init__(self, db_path, sinks: list, on_result: Callable[[StoredResult], None],
                 batch_max: int = 1000, on_commit: Callable[[int], None] | None = None,
                 building_of: Callable[[str], str] | None = None):
        super().__init__(name="store-writer", daemon=True)
        self.db_path = db_path
        # sink names, or sink objects whose optional wants(type, cause) filters what is queued for them
        self.sinks = [(x, None) if isinstance(x, str) else (x.name, getattr(x, "wants", None)) for x in sinks]
        self.on_result = on_result
        self.on_commit = on_commit
        self.batch_max = batch_max
        self.building_of = building_of or (lambda dev: "")
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self.conn: sqlite3.Connection | None = None
        self.started_ok = threading.Event()

    # --- producers (any thread) ---
    def submit_event(self, item: Incoming) -> None:
        self.q.put(item)

    def submit(self, job: Callable[[sqlite3.Connection], After | None]) -> None:
        """A job runs inside the next transaction; what it returns runs after the commit."""
        self.q.put(job)

    def backlog(self) -> int:
        return self.q.qsize()

    def stop(self) -> None:
        self._stopping.set()
        self.q.put(None)

    # --- the thread ---
    def run(self) -> None:
        self.conn = db.connect(self.db_path, durable=True)
        self.started_ok.set()
        while True:
            first = self.q.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stopping.set()
                    break
                batch.append(nxt)
            self._commit(batch)
            if self._stopping.is_set():
                break
        # drain what is left so a clean shutdown stores everything already received
        rest = []
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._commit(rest)
        self.conn.close()

    def _commit(self, batch: list) -> None:
        try:
            afters = self._apply(batch)
        except Exception:
            log.exception("store batch failed; retrying its items one by one")
            afters = []
            for item in batch:
                try:
                    afters += self._apply([item])
                except Exception:
                    # not acked to the broker: it redelivers when the session resumes
                    log.exception("store: dropping one item that cannot be stored")
        if self.on_commit:
            self.on_commit(len(batch))
        for fn in afters:
            try:
                fn()
            except Exception:
                log.exception("after-commit action failed")

    def _apply(self, batch: list) -> list[After]:
        conn = self.conn
        if conn is None:
            raise RuntimeError("store writer: the database is not open")
        afters: list[After] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if isinstance(item, Incoming):
                    afters.extend(self._apply_event(conn, item))
                else:
                    after = item(conn)
                    if after:
                        afters.append(after)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return afters

    @staticmethod
    def _highest_ctr(conn, dev: str, ep: str) -> int | None:
        """Read inside the write transaction (index events_dev_ep): includes other processes' commits."""
        return conn.execute("SELECT MAX(ctr) FROM events WHERE dev=? AND ep=?", (dev, ep)).fetchone()[0]

    def _apply_event(self, conn, item: Incoming) -> list[After]:
        ev = item.event
        eid, dev, ep = ev["id"], ev["dev"], ev.get("ep") or ""
        row = conn.execute("SELECT body, stage, incident, reason FROM events WHERE id=?", (eid,)).fetchone()
        highest = self._highest_ctr(conn, dev, ep)
        verdict = classify(item.frame.body, ev["ctr"], row["body"] if row else None, highest)
        late = None
        if verdict == LATE:
            late = f"counter {ev['ctr']} arrived after {highest}: sent again late, or overtaken"
        if verdict in (NEW, LATE):
            ref = ev.get("ref")
            incident_key = eid
            if ref:
                parent = conn.execute("SELECT incident_key FROM events WHERE id=?", (ref,)).fetchone()
                incident_key = parent["incident_key"] if parent else ref
            cur = conn.execute(
                "INSERT INTO events (id, dev, ep, ctr, type, cause, ref, incident_key, building, body,"
                " received_at, stage, stage_at, late) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'stored', ?, ?)",
                (eid, dev, ep, ev["ctr"], ev["type"], ev["cause"], ref, incident_key, self.building_of(dev),
                 item.frame.body, item.received_at, time.time(), late),
            )
            seq = cur.lastrowid
            for sink, wants in self.sinks:
                if wants is not None and not wants(ev["type"], ev["cause"]):
                    continue
                conn.execute(
                    "INSERT OR IGNORE INTO deliveries (sink, event_id, seq, created_at, next_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (sink, eid, seq, item.received_at, item.received_at),
                )
            self._device_faults(conn, ev)
            previous = self._note_epoch(conn, dev, ep, item.received_at) if highest is None else None
            result = StoredResult(verdict, eid, dev, "stored", event=ev, late=late, new_epoch=previous)
        elif verdict == DUPLICATE:
            result = StoredResult(DUPLICATE, eid, dev, row["stage"], row["incident"], row["reason"], event=ev)
        else:
            assert verdict == CONFLICT
            record_reject(conn, "conflict", dev)
            result = StoredResult(verdict, eid, dev, event=ev)
        afters: list[After] = [lambda: self.on_result(result)]
        if item.settle:
            afters.append(item.settle)
        return afters

    @staticmethod
    def _note_epoch(conn, dev: str, ep: str, at: float) -> str | None:
        """The first event of an install: remember it as the device's current one. Returns the
        previous epoch ('' for firmware before epochs) when the device had one: it was re-flashed or
        its filesystem was wiped, and its counter started again."""
        row = conn.execute("SELECT epoch FROM device_state WHERE id=?", (dev,)).fetchone()
        before = row["epoch"] if row else None
        if before is None:
            old = conn.execute("SELECT ep FROM events WHERE dev=? AND ep<>? ORDER BY seq DESC LIMIT 1",
                               (dev, ep)).fetchone()
            before = old["ep"] if old else None
        if before == ep:
            return None
        conn.execute("INSERT INTO device_state (id, epoch, epoch_at, epoch_prev) VALUES (?, ?, ?, ?)"
                     " ON CONFLICT(id) DO UPDATE SET epoch=excluded.epoch, epoch_at=excluded.epoch_at,"
                     " epoch_prev=excluded.epoch_prev", (dev, ep, at, before))
        return before

    @staticmethod
    def _device_faults(conn, ev: dict) -> None:
        """A device's fault event opens an operator fault; its restore closes it."""
        kind = "device:" + ev["cause"]
        if ev["type"] == "fault":
            detail = str((ev.get("data") or {}).get("detail", ""))[:200]
            raise_fault(conn, kind, f"{ev['cause']} fault reported by the device: {detail}".rstrip(": "),
                        device=ev["dev"])
        elif ev["type"] == "restore":
            clear_fault(conn, kind, device=ev["dev"])


def record_reject(conn, reason: str, dev: str) -> None:
    conn.execute(
        "INSERT INTO rejects (reason, device, n, last_at) VALUES (?, ?, 1, ?) "
        "ON CONFLICT(reason, device) DO UPDATE SET n=n+1, last_at=excluded.last_at",
        (reason, dev, time.time()),
    )

"""Stage 3, store: one writer thread, group commit.

Everything that changes the database on the ingest path goes through this thread's queues: events,
telemetry, presence, rejects. It takes what is queued (up to `batch_max`, events first), applies it in one
transaction, commits (fsynced: synchronous=FULL), and only then runs the items' after-commit actions:
the `stored` ack to the device, the MQTT PUBACK to the broker, waking the delivery workers. So a storm
costs one fsync per batch, not one per alarm, and nothing is acked before it is on disk.

Several bridge processes may share one database (docs/operator-guide.md, several instances): every
new/late/duplicate/conflict decision is made inside the write transaction (BEGIN IMMEDIATE) from what the
database holds, never from a per-process cache, so another process's commit is always seen.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .. import db
from ..faults import clear_fault, raise_fault
from ..retention import pruned_through
from ..stages.authenticate import CONFLICT, DUPLICATE, FORGOTTEN, LATE, NEW, classify
from ..stages.parse import Frame
from ..storage import StorageHealth, is_storage_error

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
    verdict: str  # new | late | duplicate | conflict | forgotten
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
    """on_result(StoredResult) runs after the commit, in this thread, for every event handled.

    Two queues: events (alarms, cancels, faults: what a device signs) always go ahead of jobs
    (telemetry, presence, reject counters, bookkeeping), so no amount of the latter delays an alarm.
    When the database cannot be written (bridge/storage.py) the batch is kept and tried again, with a
    backoff; nothing is acked meanwhile, so the broker holds what it has not been PUBACKed. Jobs that
    can be lost (telemetry and the like) are capped meanwhile at `max_backlog`, and the excess counted
    in `dropped`; events are never dropped."""

    def __init__(self, db_path, sinks: list, on_result: Callable[[StoredResult], None],
                 batch_max: int = 1000, on_commit: Callable[[int], None] | None = None,
                 building_of: Callable[[str], str] | None = None, health: StorageHealth | None = None,
                 max_backlog: int = 20000, on_alarm: Callable[[sqlite3.Connection, str, str, float], object] | None = None):
        super().__init__(name="store-writer", daemon=True)
        self.db_path = db_path
        # sink names, or sink objects whose optional wants(type, cause) filters what is queued for them
        self.sinks = [(x, None) if isinstance(x, str) else (x.name, getattr(x, "wants", None)) for x in sinks]
        self.on_result = on_result
        self.on_commit = on_commit
        self.batch_max = batch_max
        self.building_of = building_of or (lambda dev: "")
        self.health = health or StorageHealth()
        self.max_backlog = max_backlog
        self.on_alarm = on_alarm  # (conn, event id, building, received at), in the alarm's transaction
        self._events: deque = deque()
        self._jobs: deque = deque()  # (job, droppable)
        self._cv = threading.Condition()
        self._stopping = threading.Event()
        self.conn: sqlite3.Connection | None = None
        self.started_ok = threading.Event()
        self.dropped = 0  # droppable jobs not kept while storage failed
        self.busy_since: float | None = None  # monotonic start of the commit in progress
        self._failing = False

    # --- producers (any thread) ---
    def submit_event(self, item: Incoming) -> None:
        with self._cv:
            self._events.append(item)
            self._cv.notify()

    def submit(self, job: Callable[[sqlite3.Connection], After | None], droppable: bool = False) -> bool:
        """A job runs inside the next transaction; what it returns runs after the commit.

        droppable: losing it costs nothing lasting (a telemetry sample, a reject counter); while the
        storage fails such jobs are kept up to `max_backlog`. Returns False when it was dropped."""
        with self._cv:
            if droppable and self._failing and len(self._jobs) >= self.max_backlog:
                self.dropped += 1
                return False
            self._jobs.append((job, droppable))
            self._cv.notify()
        return True

    def backlog(self) -> int:
        return len(self._events) + len(self._jobs)

    def busy_for(self) -> float:
        """How long the commit in progress has been running (0 when idle): a write waiting on a lock
        or a stalled disk shows here before it fails."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    def stop(self) -> None:
        with self._cv:
            self._stopping.set()
            self._cv.notify()

    # --- the thread ---
    def _take(self, timeout: float | None) -> list:
        """Up to batch_max items, events first; [] after `timeout` or when stopping with nothing left."""
        with self._cv:
            if not (self._events or self._jobs or self._stopping.is_set()):
                self._cv.wait(timeout)
            batch: list = []
            while self._events and len(batch) < self.batch_max:
                batch.append(self._events.popleft())
            while self._jobs and len(batch) < self.batch_max:
                batch.append(self._jobs.popleft())
            return batch

    def _put_back(self, batch: list) -> None:
        """A batch that could not be written goes back to the front of its queues, in order."""
        with self._cv:
            self._events.extendleft(reversed([x for x in batch if isinstance(x, Incoming)]))
            self._jobs.extendleft(reversed([x for x in batch if not isinstance(x, Incoming)]))

    def run(self) -> None:
        self.conn = db.connect(self.db_path, durable=True)
        self.started_ok.set()
        backoff = 0.0
        while True:
            batch = self._take(None if backoff == 0 else 0.0)
            if not batch:
                if self._stopping.is_set():
                    break
                backoff = 0.0
                continue
            if self._commit(batch):
                backoff = 0.0
                continue
            # storage failed: the batch is back in the queue; wait a little (a stop cuts it short,
            # and what is still queued then is lost to this process but not to the broker: unacked)
            backoff = min(2.0, max(0.05, backoff * 2))
            if self._stopping.wait(backoff):
                break
        self.conn.close()

    def _commit(self, batch: list) -> bool:
        """Write a batch and run its after-commit actions; False when the storage failed (batch kept)."""
        self.busy_since = time.monotonic()
        try:
            afters = self._apply(batch)
        except Exception as e:
            if is_storage_error(e):
                return self._storage_failed(batch, e)
            # one item is wrong, not the storage: find it, write the others
            log.exception("store batch failed; writing its items one by one")
            afters = []
            for i, item in enumerate(batch):
                try:
                    afters += self._apply([item])
                except Exception as e1:
                    if is_storage_error(e1):
                        return self._storage_failed(batch[i:], e1, afters)
                    afters += self._unstorable(item, e1)
        finally:
            self.busy_since = None
        self._storage_ok()
        self._after(afters, len(batch))
        return True

    def _storage_failed(self, batch: list, e: BaseException, afters: list | None = None) -> bool:
        self.health.failed("store", e)
        with self._cv:
            self._failing = True
        self._put_back(batch)
        if afters:  # the items written before the failure are committed: finish them
            self._after(afters, 0)
        return False

    def _storage_ok(self) -> None:
        if self._failing:
            with self._cv:
                self._failing = False
        self.health.succeeded("store")

    def _unstorable(self, item, e: BaseException) -> list[After]:
        """An item that fails on a working database: a bug, or values the parser let through. A job is
        dropped (counted); an event is refused and counted, and PUBACKed so it is not sent forever."""
        self.dropped += 1
        if not isinstance(item, Incoming):
            log.error("store: dropping a job that cannot be written", exc_info=e)
            return []
        dev = item.event.get("dev", "?")
        log.error("store: an event cannot be written; refused", exc_info=e,
                  extra={"device": dev, "event": item.event.get("id")})
        try:
            self._apply([lambda conn: record_reject(conn, "unstorable", dev)])
        except Exception:
            log.exception("store: cannot count the refusal either")
        return [item.settle] if item.settle else []

    def _after(self, afters: list, n: int) -> None:
        if self.on_commit and n:
            self.on_commit(n)
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
                    job = item[0] if isinstance(item, tuple) else item
                    after = job(conn)
                    if after:
                        afters.append(after)
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT may have rolled back already
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
        floor = pruned_through(conn, dev, ep)
        if floor is not None and (highest is None or floor > highest):
            highest = floor
        verdict = classify(item.frame.body, ev["ctr"], row["body"] if row else None, highest, floor)
        afters: list[After] = []
        late = None
        if verdict == LATE:
            late = f"counter {ev['ctr']} arrived after {highest}: sent again late, or overtaken"
        if verdict in (NEW, LATE):
            ref = ev.get("ref")
            incident_key = eid
            if ref:
                parent = conn.execute("SELECT incident_key FROM events WHERE id=?", (ref,)).fetchone()
                incident_key = parent["incident_key"] if parent else ref
            building = self.building_of(dev)
            cur = conn.execute(
                "INSERT INTO events (id, dev, ep, ctr, type, cause, ref, incident_key, building, body,"
                " received_at, stage, stage_at, late) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'stored', ?, ?)",
                (eid, dev, ep, ev["ctr"], ev["type"], ev["cause"], ref, incident_key, building,
                 item.frame.body, item.received_at, time.time(), late),
            )
            if ev["type"] == "alarm" and self.on_alarm is not None:
                self.on_alarm(conn, eid, building, item.received_at)
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
            if ev["type"] == "test":
                afters.extend(self._test_received(conn, dev, item.received_at))
            previous = self._note_epoch(conn, dev, ep, item.received_at) if highest is None else None
            result = StoredResult(verdict, eid, dev, "stored", event=ev, late=late, new_epoch=previous)
        elif verdict == DUPLICATE:
            result = StoredResult(DUPLICATE, eid, dev, row["stage"], row["incident"], row["reason"], event=ev)
        else:
            assert verdict in (CONFLICT, FORGOTTEN)
            record_reject(conn, verdict, dev)
            result = StoredResult(verdict, eid, dev, event=ev)
        afters.append(lambda: self.on_result(result))
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
    def _test_received(conn, dev: str, at: float) -> list[After]:
        """A test event, whatever its cause (the periodic test signal, a self-test): the device's test
        path works. Its time feeds the test watch (bridge/workers/test_watch.py); its fault clears."""
        conn.execute("INSERT INTO device_state (id, last_test) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET"
                     " last_test=MAX(COALESCE(last_test, 0), excluded.last_test)", (dev, at))
        if clear_fault(conn, "test-missed", device=dev, now=at):
            return [lambda: log.info("periodic test received again: test-missed cleared", extra={"device": dev})]
        return []

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


def record_reject(conn, reason: str, dev: str, n: int = 1) -> None:
    conn.execute(
        "INSERT INTO rejects (reason, device, n, last_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(reason, device) DO UPDATE SET n=n+excluded.n, last_at=excluded.last_at",
        (reason, dev, n, time.time()),
    )

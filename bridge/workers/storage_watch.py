"""The storage watch, run by the supervision ticker: the `storage` fault, the state file, retention.

A write that fails (bridge/storage.py) or waits longer than `store.fault_after_s` raises the `storage`
fault: an error log line (again every minute while it lasts), the gauge baochay_storage_ok at 0, the
health topic's `storage`, and the state file `status` reads, since the database itself may be what
cannot be written. When writes succeed again the fault is written into the faults table, opened at the
time it began and cleared now, so the history shows it. Retention (bridge/retention.py) runs through
the store writer every `store.retention_check_s`.
"""

from __future__ import annotations

import logging
import time

from .. import retention
from ..faults import clear_fault, raise_fault
from ..storage import StateFile, StorageHealth, db_bytes

log = logging.getLogger("bridge.storage")

SAY_AGAIN_S = 60  # while the fault lasts, one log line a minute


class StorageWatch:
    def __init__(self, store_cfg: dict, db_path: str, bridge_id: str, *, health: StorageHealth, writer,
                 metrics=None, state_file: StateFile | None = None):
        self.after_s = float(store_cfg["fault_after_s"])
        self.retain_s = float(store_cfg["retain_days"]) * 86400
        self.retention_every_s = float(store_cfg["retention_check_s"])
        self.db_path = db_path
        self.bridge_id = bridge_id
        self.health = health
        self.writer = writer
        self.metrics = metrics
        self.state_file = state_file
        self.fault: dict | None = None  # while raised: since (wall), error
        self._said = 0.0
        self._dropped_told = 0
        self._next_retention = time.monotonic() + min(60.0, self.retention_every_s)
        self.last_pruned = 0

    def failing(self) -> tuple[float, float, str] | None:
        """(seconds, since, why) of the storage failure now, counting a write that waits too long."""
        f = self.health.failing()
        busy = self.writer.busy_for()
        if busy >= self.after_s and (f is None or busy > f[0]):
            f = (busy, time.time() - busy, f"a write has waited {busy:.0f} s: database locked by another "
                                           "process, or the disk stalled")
        return f

    def tick(self, now_wall: float | None = None) -> None:
        now_wall = now_wall or time.time()
        f = self.failing()
        if f is not None and f[0] >= self.after_s:
            self._raise(f)
        elif f is None and self.fault is not None:
            self._clear()
        if self.metrics is not None:
            self.metrics.storage_ok.set(0 if self.fault else 1)
            self.metrics.db_bytes.set(db_bytes(self.db_path))
            dropped = self.writer.dropped
            if dropped > self._dropped_told:
                self.metrics.store_dropped.inc(dropped - self._dropped_told)
                self._dropped_told = dropped
        if self.state_file is not None:
            try:
                self.state_file.write({"bridge_id": self.bridge_id, "alive": round(now_wall, 1),
                                       "storage": self.fault, "store_queue": self.writer.backlog(),
                                       "dropped": self.writer.dropped})
            except OSError as e:
                log.warning("cannot write the state file", extra={"detail": str(e)})
        if self.retain_s > 0 and time.monotonic() >= self._next_retention and self.fault is None:
            self._next_retention = time.monotonic() + self.retention_every_s
            self.prune(now_wall - self.retain_s)

    def _raise(self, f: tuple[float, float, str]) -> None:
        seconds, since, why = f
        first = self.fault is None
        self.fault = {"since": round(since, 1), "error": why, "queued": self.writer.backlog()}
        if first or time.monotonic() - self._said >= SAY_AGAIN_S:
            self._said = time.monotonic()
            log.error("storage failing: nothing received is dropped or acked until it can be written; the "
                      "broker keeps what is not acked", extra={"since_s": round(seconds), "detail": why,
                                                               "queued": self.writer.backlog(),
                                                               "dropped": self.writer.dropped})

    def _clear(self) -> None:
        fault, self.fault = self.fault, None
        assert fault is not None
        lasted = time.time() - fault["since"]
        log.warning("storage writes succeed again", extra={"lasted_s": round(lasted, 1),
                                                           "dropped": self.writer.dropped})

        def job(conn):
            raise_fault(conn, "storage", f"the database could not be written for {lasted:.0f} s: "
                        f"{fault['error']}", now=fault["since"])
            clear_fault(conn, "storage")
        self.writer.submit(job)

    def prune(self, before: float) -> None:
        """Forget what is older than `before`, a batch per transaction until nothing is left."""
        def job(conn):
            n = retention.prune_batch(conn, before)
            if n < retention.BATCH:
                n += retention.prune_other(conn, before)
            conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('retention', ?)",
                         (f"{time.time():.0f} {n}",))

            def after():
                self.last_pruned += n
                if n >= retention.BATCH:
                    self.writer.submit(job, droppable=True)
                elif self.last_pruned:
                    log.info("retention: old events forgotten", extra={"events": self.last_pruned})
                    self.last_pruned = 0
            return after
        self.writer.submit(job, droppable=True)

    def health_part(self) -> dict:
        return {"ok": self.fault is None, **(self.fault or {}), "db_bytes": db_bytes(self.db_path)}

"""The flood watch, run by the supervision ticker: what bridge/limits.py dropped and refused, written
once a tick, and the `flood` fault naming each device over its limits.

A device with messages dropped over its limits gets a `flood` fault (one, kept open while it lasts,
with the counts), a warning log line a minute while it lasts, and the fault clears once the device
has stayed within its limits for `limits.flood_clear_s`. Reject counters reach the `rejects` table in
one job a tick, however many junk messages came.
"""

from __future__ import annotations

import logging
import time

from ..faults import clear_fault, raise_fault
from ..limits import Drops
from .store_writer import record_reject

log = logging.getLogger("bridge.limits")

SAY_AGAIN_S = 60


class FloodWatch:
    def __init__(self, drops: Drops, writer, clear_s: float = 60.0, clock=time.monotonic):
        self.drops = drops
        self.writer = writer
        self.clear_s = clear_s
        self.clock = clock
        self.flooding: dict[str, dict] = {}  # dev -> {"last": t, "said": t, "n": {kind: count}}

    def tick(self) -> None:
        dropped, rejected = self.drops.take()
        now = self.clock()
        per_dev: dict[str, dict[str, int]] = {}
        for (dev, kind), n in dropped.items():
            per_dev.setdefault(dev, {})[kind] = n
        raise_for, clear_for = [], []
        for dev, counts in per_dev.items():
            f = self.flooding.get(dev)
            if f is None:
                f = self.flooding[dev] = {"since": time.time(), "said": -SAY_AGAIN_S, "n": {}}
                raise_for.append(dev)
            f["last"] = now
            for k, n in counts.items():
                f["n"][k] = f["n"].get(k, 0) + n
            if now - f["said"] >= SAY_AGAIN_S:
                f["said"] = now
                log.warning("device over its limits: its messages are dropped, others' go ahead",
                            extra={"device": dev, "dropped": dict(f["n"])})
        for dev, f in list(self.flooding.items()):
            if now - f["last"] >= self.clear_s:
                del self.flooding[dev]
                clear_for.append(dev)
                log.info("device within its limits again", extra={"device": dev, "dropped": f["n"]})
        if not (rejected or raise_for or clear_for):
            return
        reasons = {dev: self._reason(self.flooding[dev]["n"]) for dev in raise_for}

        def job(conn):
            for (reason, dev), n in rejected.items():
                record_reject(conn, reason, dev, n)
            for dev, why in reasons.items():
                raise_fault(conn, "flood", why, device=dev)
            for dev in clear_for:
                clear_fault(conn, "flood", device=dev)
        self.writer.submit(job, droppable=not (raise_for or clear_for))

    @staticmethod
    def _reason(counts: dict[str, int]) -> str:
        parts = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
        return f"over its limits (limits.rates): its messages are dropped ({parts} so far)"

"""The bridge's clock: wall-clock seconds that move with the monotonic clock, never by a step.

Deadlines (EN 54-21's 100 s, the retry backoffs, a device's supervision period, its last periodic
test) are stored in the
database as wall-clock times, so that every process and every restart reads them alike. Read against
the system clock, a step of that clock (NTP correcting a wrong clock, an operator, a virtual machine
resumed) would fail every pending alarm at once (a step forward) or freeze delivery and presence for
as long as the step (a step back). So the bridge reads this clock instead: the wall clock as it was at
start, advanced by the monotonic clock. Drift under `step_s` is absorbed as it comes; a larger step is
noticed by the supervision ticker, which moves the stored deadlines and signs of life by the step in
one transaction and only then lets the clock follow (`follow`). Several processes on one database
notice the same step; the database records which offset its times follow (meta `clock_offset`), so
they are moved once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

STEP_S = 2.0  # a jump of the wall clock against the monotonic one at least this large is a step


class BridgeClock:
    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic,
                 step_s: float = STEP_S) -> None:
        self._wall, self._mono, self.step_s = wall, mono, step_s
        self.base = wall() - mono()  # the wall clock's offset from the monotonic clock this clock follows

    def __call__(self) -> float:
        return self.base + self._mono()

    def pending_step(self) -> float:
        """Seconds the wall clock has stepped and this clock has not followed yet (0.0: none; drift
        under step_s is taken in here, a fraction of a second at a time)."""
        d = (self._wall() - self._mono()) - self.base
        if abs(d) < self.step_s:
            self.base += d
            return 0.0
        return d

    def follow(self, d: float) -> None:
        self.base += d


def record_offset(conn, offset: float) -> None:
    """At start: the stored times follow this process's clock from now on (a step while no bridge ran
    cannot be told from the time it was down, and is not moved)."""
    conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('clock_offset', ?)", (repr(offset),))


def move_stored_times(conn, offset: float, step_s: float = STEP_S) -> float:
    """Inside a write transaction: express the stored deadlines and signs of life in the wall clock of
    `offset` (wall minus monotonic). Returns the seconds they moved (0.0 when another process on this
    database has moved them already)."""
    row = conn.execute("SELECT v FROM meta WHERE k='clock_offset'").fetchone()
    shift = offset - float(row[0]) if row else 0.0
    if abs(shift) >= step_s:
        conn.execute("UPDATE deliveries SET created_at=created_at+?, next_at=next_at+? WHERE state='pending'",
                     (shift, shift))
        conn.execute("UPDATE device_state SET last_seen=last_seen+? WHERE last_seen IS NOT NULL", (shift,))
        conn.execute("UPDATE device_state SET last_test=last_test+? WHERE last_test IS NOT NULL", (shift,))
    else:
        shift = 0.0
    record_offset(conn, offset)
    return shift

"""The test watch, run by the supervision ticker: a device whose periodic test signal stops gets the
`test-missed` fault.

Every device sends a `test` event on a schedule (the firmware's default: every 24 h). The store writer
records when each device's last one was received (device_state.last_test) and clears its
`test-missed` fault as it does. Here, each tick, a device whose last test is older than its class's
period (`supervision.test_s`, or `supervision.test_s_by_class`) plus `supervision.test_grace_s` gets
the fault naming it; 0 turns the watch off, for all or for one class.

Only devices that have sent at least one test are watched: one that never did (older firmware, the
simulated devices of the tests) has nothing to miss, and `status` shows its last test as `never`.
After the bridge starts, and after its broker comes back, every device has one grace period more
before it is judged: a test queued while the bridge could not hear arrives first. Times are read on
the bridge's clock (bridge/clock.py), which a step of the system clock does not move, and the stored
times move with a step, so a step neither raises nor hides the fault.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from ..faults import clear_fault, raise_fault

log = logging.getLogger("bridge")

KIND = "test-missed"


def _span(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 7200 else f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


class TestWatch:
    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, sup_cfg: dict, writer, metrics=None):
        self.default_s = float(sup_cfg["test_s"])
        self.grace_s = float(sup_cfg["test_grace_s"])
        self.by_class = {k: float(v) for k, v in (sup_cfg.get("test_s_by_class") or {}).items()}
        self.writer = writer
        self.metrics = metrics
        self.missed = 0  # open test-missed faults, as of the last tick (the health topic says it)
        self._submitted: set[str] = set()  # raised or cleared, not committed yet

    def period(self, cls: str) -> float:
        return self.by_class.get(cls, self.default_s)

    def enabled(self) -> bool:
        return self.default_s > 0 or any(v > 0 for v in self.by_class.values())

    def tick(self, conn: sqlite3.Connection, now: float, floor: float, judge: bool = True) -> None:
        """now: the bridge clock; floor: since when the bridge has been hearing (its start, or its
        broker's return), so nobody is judged before a grace period after it; judge: False while the
        broker is unreachable (what cannot be heard is not judged)."""
        open_ = {r[0] for r in conn.execute("SELECT device FROM faults WHERE open=1 AND kind=?", (KIND,))}
        self.missed = len(open_)
        if self.metrics is not None:
            self.metrics.tests_missed.set(self.missed)
        if not judge or not (self.enabled() or open_):
            return
        raise_for: dict[str, str] = {}
        clear_for: list[str] = []
        for r in conn.execute("SELECT s.id, s.last_test, d.supervision FROM device_state s"
                              " JOIN devices d ON d.id=s.id WHERE s.last_test IS NOT NULL"):
            dev, last, period = r["id"], r["last_test"], self.period(r["supervision"])
            if period <= 0 or now <= last + period + self.grace_s:
                if dev in open_:  # within its period again (a test arrived), or no longer watched
                    clear_for.append(dev)
                continue
            if dev in open_ or now <= floor + self.grace_s:
                continue
            raise_for[dev] = (f"no periodic test for {_span(now - last)} (last received "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))}; "
                              f"{r['supervision']} expects one every {_span(period)}, "
                              f"{_span(self.grace_s)} grace)")
        raise_for = {d: why for d, why in raise_for.items() if d not in self._submitted}
        clear_for = [d for d in clear_for if d not in self._submitted]
        if not (raise_for or clear_for):
            return
        for dev, why in raise_for.items():
            log.warning("device missed its periodic test", extra={"device": dev, "reason": why})
        mine = set(raise_for) | set(clear_for)
        self._submitted |= mine

        def job(c):
            for dev, why in raise_for.items():
                raise_fault(c, KIND, why, device=dev, now=now)
            for dev in clear_for:
                clear_fault(c, KIND, device=dev, now=now)

            def after():
                self._submitted -= mine
            return after
        if not self.writer.submit(job):
            self._submitted -= mine

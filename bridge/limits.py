"""Per-device limits: one device cannot push another aside.

A token bucket per device and kind of traffic (telemetry, status, rejected: anything refused), sized
per supervision class (`limits.rates`). Over its bucket a message is dropped on the MQTT thread before
any parsing, and counted; events are never limited (an alarm goes through however its device
behaves: it is verified, cheaply, and only what fails verification counts as rejected). Devices that
are not registered share one bucket, so random ids cost no memory.

`Drops` gathers what was dropped and refused per device, in memory: the ticker writes it in one job a
tick (not one database write per junk message) and turns it into the `flood` fault and a log line a
minute per device.
"""

from __future__ import annotations

import threading
import time

KINDS = ("telemetry", "status", "rejected")
UNREGISTERED = "(unregistered)"  # the shared bucket, and the reject counters' device, of unknown ids
MAX_DEVICES = 1000  # distinct devices counted per tick before the rest are folded into one line


class Limits:
    """rates: class -> kind -> (per second, burst). Thread-safe enough for one caller thread (paho's)."""

    def __init__(self, rates: dict, clock=time.monotonic):
        self.rates = {c: {k: (float(v[0]), float(v[1])) for k, v in kinds.items()} for c, kinds in rates.items()}
        self.clock = clock
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def take(self, dev: str, kind: str, cls: str = "mains") -> bool:
        """One message of `kind` from `dev`: True when within its limit (a token taken)."""
        rate, burst = self.rates.get(cls, self.rates["mains"])[kind]
        now = self.clock()
        b = self._buckets.get((dev, kind))
        if b is None:
            self._buckets[(dev, kind)] = [burst - 1.0, now]
            return True
        tokens = min(burst, b[0] + (now - b[1]) * rate)
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    def forget(self, dev: str) -> None:
        for k in KINDS:
            self._buckets.pop((dev, k), None)


class Drops:
    """Counts, per device, of messages dropped over a limit and of rejects by reason; taken each tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dropped: dict[tuple[str, str], int] = {}  # (dev, kind) -> n
        self._rejected: dict[tuple[str, str], int] = {}  # (reason, dev) -> n

    def dropped(self, dev: str, kind: str) -> None:
        with self._lock:
            self._dropped[(dev, kind)] = self._dropped.get((dev, kind), 0) + 1

    def rejected(self, reason: str, dev: str) -> None:
        with self._lock:
            if len(self._rejected) >= MAX_DEVICES and (reason, dev) not in self._rejected:
                dev = UNREGISTERED
            self._rejected[(reason, dev)] = self._rejected.get((reason, dev), 0) + 1

    def take(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        with self._lock:
            d, r = self._dropped, self._rejected
            self._dropped, self._rejected = {}, {}
        return d, r

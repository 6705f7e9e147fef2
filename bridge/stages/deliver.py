"""Stage 6, deliver: what one send's outcome means for a report's row at one sink. Pure.

`accepted` -> done (the sink's ref is the 114 incident id); `retry` -> again after an exponential backoff
with jitter, never later than the deadline; `refused`, or no acceptance within `max_age_s` of receipt
(EN 54-21: 100 s) -> `failed`. The device hears `forwarded` only when the first attempt does not end in
acceptance: when the sink accepts at once, `accepted` follows `stored` directly.
The sending itself (outboxes, claims, commits, acks) is bridge/workers/delivery.py's.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from ..report import Outcome


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
class Decision:
    state: str  # accepted | pending (sent again at next_at) | failed
    attempts: int
    next_at: float | None = None
    ref: str | None = None  # the receiver's id, with accepted
    why: str = ""  # with failed: the reason; with pending: the error to retry after
    stage: str | None = None  # the device-facing stage it calls for (told only by the acked sink)


def incident_part(incident_key: str, parts: int) -> int:
    """Which of a sink's `parts` workers owns an incident (stable across restarts)."""
    return zlib.crc32(incident_key.encode()) % parts


def overdue(created_at: float, now: float, policy: DeliveryPolicy, sink: str, last_error: str | None) -> str | None:
    """Why a report not accepted in time has failed, or None while it still has time."""
    if now < created_at + policy.max_age_s:
        return None
    why = f"not accepted by {sink} within {policy.max_age_s:.0f} s"
    if last_error:
        why += f" (last error: {last_error})"
    return why


def after_send(outcome: Outcome, attempts: int, now: float, created_at: float, policy: DeliveryPolicy,
               sink: str) -> Decision:
    """attempts: the row's attempts before this send."""
    if outcome.status == "accepted":
        return Decision("accepted", attempts + 1, ref=outcome.ref, stage="accepted")
    if outcome.status == "refused":
        why = f"refused by {sink}: {outcome.detail}"
        return Decision("failed", attempts, why=why, stage="failed")
    n = attempts + 1
    nxt = min(now + policy.backoff(n), created_at + policy.max_age_s)
    return Decision("pending", n, next_at=nxt, why=outcome.detail,
                    stage="forwarded" if attempts == 0 else None)  # handed over, not yet accepted

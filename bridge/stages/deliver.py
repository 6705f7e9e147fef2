"""Stage 6, deliver: what one send's outcome means for a report's row at one sink. Pure.

`accepted` -> done (the sink's ref is the 114 incident id); `retry` -> again after an exponential backoff
with jitter, never later than the deadline; `refused`, or no acceptance within `max_age_s` of receipt
(EN 54-21: 100 s) -> `failed`: the device is told (the occupant calls 114) and the operator gets a
fault, but `failed` is not the end. The report is sent again, with a backoff capped at
`late_backoff_max_s`, until the sink accepts it (a late acceptance: the device hears `accepted`, the
fault clears), an operator closes it (`baochay-bridge alarms close`), or `horizon_s` after receipt
(24 h), when the bridge gives up and says so. The device hears `forwarded` only when the first attempt
does not end in acceptance: when the sink accepts at once, `accepted` follows `stored` directly.
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
    horizon_s: float = 86400.0  # after failing, how long after receipt the bridge keeps trying
    late_backoff_max_s: float = 60.0  # the backoff's cap once failed: an intake down for hours

    def backoff(self, attempts: int, cap: float | None = None) -> float:
        cap = self.backoff_max_s if cap is None else cap
        base = min(cap, self.backoff_initial_s * (2 ** min(64, max(0, attempts - 1))))
        return max(0.01, base * (1 + self.jitter * random.uniform(-1.0, 1.0)))


@dataclass(frozen=True)
class Decision:
    state: str  # accepted | pending (sent again at next_at) | failed (told now, and sent again at next_at)
    attempts: int
    next_at: float | None = None
    ref: str | None = None  # the receiver's id, with accepted
    why: str = ""  # with failed: the reason; with pending: the error to retry after
    stage: str | None = None  # the device-facing stage it calls for (told only by the acked sink)


def incident_part(incident_key: str, parts: int) -> int:
    """Which of a sink's `parts` workers owns an incident (stable across restarts)."""
    return zlib.crc32(incident_key.encode()) % parts


def _past(deadline: float, now: float, why: str, last_error: str | None) -> str | None:
    if now < deadline:
        return None
    return f"{why} (last error: {last_error})" if last_error else why


def overdue(created_at: float, now: float, policy: DeliveryPolicy, sink: str, last_error: str | None) -> str | None:
    """Why a report not accepted in time has failed, or None while it still has time."""
    return _past(created_at + policy.max_age_s, now, f"not accepted by {sink} within {policy.max_age_s:.0f} s",
                 last_error)


def expired(created_at: float, now: float, policy: DeliveryPolicy, sink: str, last_error: str | None) -> str | None:
    """Why the bridge gives up on a failed report (its horizon has passed), or None while it tries."""
    return _past(created_at + policy.horizon_s, now,
                 f"gave up: not accepted by {sink} within {policy.horizon_s / 3600:g} h of receipt", last_error)


def late_retry_at(attempts: int, now: float, created_at: float, policy: DeliveryPolicy) -> float:
    """When a report that has already failed is sent again."""
    return min(now + policy.backoff(attempts, cap=max(policy.backoff_max_s, policy.late_backoff_max_s)),
               created_at + policy.horizon_s)


def after_send(outcome: Outcome, attempts: int, now: float, created_at: float, policy: DeliveryPolicy,
               sink: str, failed: bool = False) -> Decision:
    """attempts: the row's attempts before this send; failed: the device was already told `failed`."""
    if outcome.status == "accepted":
        return Decision("accepted", attempts + 1, ref=outcome.ref, stage="accepted")
    n = attempts + 1
    if failed:  # keep trying, slowly: a late acceptance is still the better news
        return Decision("pending", n, next_at=late_retry_at(n, now, created_at, policy), why=outcome.detail)
    if outcome.status == "refused":
        why = f"refused by {sink}: {outcome.detail}"
        return Decision("failed", n, next_at=late_retry_at(n, now, created_at, policy), why=why, stage="failed")
    nxt = min(now + policy.backoff(n), created_at + policy.max_age_s)
    return Decision("pending", n, next_at=nxt, why=outcome.detail,
                    stage="forwarded" if attempts == 0 else None)  # handed over, not yet accepted

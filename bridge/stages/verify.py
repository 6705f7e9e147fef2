"""Stage 4, verify: how likely is this a real fire? A confidence 0..1 with the reasons behind it.

Nothing is dropped here: every event goes on with its confidence, so the 114 operator decides.
The facts around an event are read from the database by the delivery worker, a whole batch at a time
(bridge/workers/delivery.py `gather_contexts`); `context_of` turns them into one event's `Context`.
This module is pure and easy to test.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from firmware.protocol_host import SENSOR_CAUSES

# Starting point per (type, cause): a person pressing a call point is the strongest single signal.
BASE = {
    ("alarm", "button"): (0.80, "manual call point pressed"),
    # The building's own fire alarm panel in alarm: its detectors and its logic already confirmed it.
    ("alarm", "panel"): (0.90, "the building's fire alarm panel is in alarm"),
    ("alarm", "multi"): (0.85, "heat and smoke both confirmed"),
    ("alarm", "heat"): (0.65, "heat detector alarm"),
    ("alarm", "smoke"): (0.60, "smoke detector alarm"),
    ("prealarm", "button"): (0.50, "call point pre-alarm"),
    ("prealarm", "multi"): (0.45, "multi-criteria pre-alarm"),
    ("prealarm", "heat"): (0.35, "heat pre-alarm (one criterion)"),
    ("prealarm", "smoke"): (0.30, "smoke pre-alarm (one criterion)"),
}
SENSOR_FAULTS = ("sensor", "i2c", "chamber")
STATIC_HEAT_C = 54.0  # EN 54-5 class A1 lower static response limit
SMOKE_THRESHOLD_DB_M = 0.05  # EN 54-7 lower response threshold


@dataclass(frozen=True)
class VerifyPolicy:
    window_s: float = 120.0  # other devices of the building alarming this close in time corroborate
    offline_window_s: float = 600.0  # an offline spell this recent lowers the confidence
    most_corroborating: int = 10


@dataclass
class Context:
    """What the bridge knows around one event."""

    corroborating: list[str] = field(default_factory=list)  # other devices of the building alarming lately
    window_s: float = 120.0
    open_faults: list[str] = field(default_factory=list)  # this device's open fault causes
    was_offline: bool = False  # the device was offline recently
    cancelled_by: str | None = None  # id of a cancel that refers to this event
    building: str = ""


def alarming_near(times_by_dev: dict[str, list[float]], me: str, lo: float, hi: float, most: int) -> list[str]:
    """Up to `most` other devices with an alarm time (sorted lists) within [lo, hi]."""
    out = []
    for dev, ts in times_by_dev.items():
        if dev == me:
            continue
        i = bisect.bisect_left(ts, lo)
        if i < len(ts) and ts[i] <= hi:
            out.append(dev)
            if len(out) == most:
                break
    return out


def context_of(dev: str, received_at: float, building: str, policy: VerifyPolicy, *,
               alarms: dict[str, list[float]], device_faults: list[str], offline: list[tuple],
               cancelled_by: str | None) -> Context:
    """One event's Context from the facts read around it.

    alarms: alarm/prealarm times (sorted) per device of the building; device_faults: the causes of
    this device's open device faults; offline: this device's `offline` faults as (open, cleared_at).
    """
    t, w = received_at, policy.window_s
    ctx = Context(window_s=w, building=building, cancelled_by=cancelled_by)
    if building:
        ctx.corroborating = alarming_near(alarms, dev, t - w, t + w, policy.most_corroborating)
    ctx.open_faults = [k for k in device_faults if k in SENSOR_FAULTS]
    ctx.was_offline = any(o == 1 or (c is not None and c > t - policy.offline_window_s) for o, c in offline)
    return ctx


def _num(data: dict, key: str) -> float | None:
    v = data.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def assess(event: dict, ctx: Context) -> tuple[float, tuple[str, ...]]:
    typ, cause, data = event["type"], event["cause"], event.get("data") or {}
    reasons: list[str] = []
    if typ == "test":
        return 0.0, ("self-test event, not a fire",)
    if typ == "fault":
        return 0.0, (f"device fault ({cause}): {str(data.get('detail', ''))[:120]}".rstrip(": "),)
    if typ == "restore":
        if cause in SENSOR_CAUSES:
            return 0.0, (f"{cause} condition cleared at the device: readings back to normal",)
        if cause == "panel":
            return 0.0, ("the fire alarm panel is out of alarm (reset at the panel)",)
        return 0.0, (f"device fault cleared ({cause})",)
    if typ == "cancel":
        return 0.05, ("cancelled at the device by a long hold (false press)",)

    score, why = BASE.get((typ, cause), (0.5, f"{typ} ({cause})"))
    reasons.append(why)

    t = _num(data, "t")
    if t is not None and cause in ("heat", "multi"):
        if t >= STATIC_HEAT_C:
            score += 0.10
            reasons.append(f"temperature {t:.1f} C at or above the {STATIC_HEAT_C:.0f} C static limit")
        elif t < 40:
            score -= 0.10
            reasons.append(f"temperature only {t:.1f} C")
    obs = _num(data, "obs")
    if obs is not None and cause in ("smoke", "multi"):
        if obs >= SMOKE_THRESHOLD_DB_M:
            score += 0.10
            reasons.append(f"smoke obscuration {obs:.2f} dB/m")
        rh = _num(data, "rh")
        if rh is not None and rh >= 90 and (t is None or t < 40):
            score -= 0.15
            reasons.append(f"humidity {rh:.0f} %RH without heat: possibly steam")

    n = len(ctx.corroborating)
    if n:
        score += min(0.3, 0.15 * n)
        where = f" in {ctx.building}" if ctx.building else ""
        reasons.append(f"corroborated by {n} other device(s){where} within {ctx.window_s:.0f} s")
    if ctx.open_faults and cause != "button":
        score -= 0.20
        reasons.append("device has open fault(s): " + ", ".join(sorted(set(ctx.open_faults))))
    if ctx.was_offline:
        score -= 0.05
        reasons.append("device was offline recently")
    if ctx.cancelled_by:
        score *= 0.2
        reasons.append(f"cancelled at the device ({ctx.cancelled_by})")
    return round(min(1.0, max(0.0, score)), 2), tuple(reasons)

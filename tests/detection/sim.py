"""Ramp / lag / noise simulator for the detectors (tests only).

The air temperature follows a profile; the sensor in its housing follows the air as a first-order
lag with time constant `tau`; each reading adds uniform noise of +-`noise` degC. Run as a script
to print the EN 54-5 evidence table of docs/detection.md:

    .venv/bin/python tests/detection/sim.py --table
"""

import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))

from detect.heat import HeatDetector  # noqa: E402

# EN 54-5 class A1 response-time limits from 25 degC, seconds: rate K/min -> (lower, upper).
A1_WINDOWS = {1: (29 * 60, 40 * 60 + 20), 3: (7 * 60 + 13, 13 * 60 + 40), 5: (4 * 60 + 9, 8 * 60 + 20),
              10: (60, 4 * 60 + 20), 20: (30, 2 * 60 + 20), 30: (20, 60 + 40)}
RATES = sorted(A1_WINDOWS)
TAUS = (20, 30, 40, 50, 60)
WARMUP_S = 300  # the detector sees this much steady ambient before the ramp starts


def ramp(rate_k_min, start_c=25.0):
    """Air temperature profile: steady, then rising at rate_k_min from t=0."""
    return lambda t: start_c + max(0.0, t) * rate_k_min / 60


def piecewise(points):
    """Air profile through (t_s, degC) points, linear between them, flat after the last."""
    def air(t):
        if t <= points[0][0]:
            return points[0][1]
        for (t0, a), (t1, b) in zip(points, points[1:], strict=False):
            if t <= t1:
                return a + (b - a) * (t - t0) / (t1 - t0) if t1 > t0 else b
        return points[-1][1]
    return air


def readings(air, tau, duration_s, sample_s=2.0, noise=0.3, seed=0, start_s=-WARMUP_S, step_s=0.25):
    """Yield (t_s, sensor reading) every sample_s from start_s to duration_s."""
    rng = random.Random(seed)
    t = start_s
    sensor = air(t)
    next_sample = t
    k = 1 - math.exp(-step_s / tau) if tau > 0 else 1.0
    while t <= duration_s:
        if t >= next_sample:
            yield t, sensor + rng.uniform(-noise, noise)
            next_sample += sample_s
        sensor += (air(t + step_s / 2) - sensor) * k
        t += step_s


def first_state(detector, air, tau, duration_s, state="alarm", **kw):
    """Time (s, from t=0) of the first reading where the detector reports `state`; None if never."""
    for t, v in readings(air, tau, duration_s, **kw):
        if detector.update(t, v) == state and t >= kw.get("start_s", -WARMUP_S):
            return t
    return None


def heat_alarm_time(rate, tau, seed=0, sample_s=2.0, noise=0.3, **settings):
    lo, hi = A1_WINDOWS.get(rate, (0, 3600))
    return first_state(HeatDetector(**settings), ramp(rate), tau, hi + 120, sample_s=sample_s,
                       noise=noise, seed=seed)


def fmt(s):
    return "-" if s is None else f"{int(s) // 60}:{int(s) % 60:02d}"


def table(seeds=range(5), sample_s=2.0):
    """Markdown table: per rate x tau, the earliest..latest alarm time over the noise seeds."""
    head = "| rate K/min | EN 54-5 A1 window | " + " | ".join(f"tau {t} s" for t in TAUS) + " |"
    lines = [head, "|" + "---|" * (len(TAUS) + 2)]
    ok = True
    for rate in RATES:
        lo, hi = A1_WINDOWS[rate]
        cells = []
        for tau in TAUS:
            times = [heat_alarm_time(rate, tau, seed, sample_s=sample_s) for seed in seeds]
            inside = all(x is not None and lo <= x <= hi for x in times)
            ok &= inside
            known = [x for x in times if x is not None]
            cell = f"{fmt(min(known))}..{fmt(max(known))}" if known else "none"
            cells.append(cell if inside else f"**{cell} OUT**")
        lines.append(f"| {rate} | {fmt(lo)}..{fmt(hi)} | {' | '.join(cells)} |")
    return "\n".join(lines), ok


if __name__ == "__main__":
    if "--table" in sys.argv:
        text, ok = table()
        print(text)
        print("\nall inside the windows" if ok else "\nSOME OUTSIDE THE WINDOWS")
    else:
        print(__doc__)

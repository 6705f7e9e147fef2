"""Smoke detector on synthetic chamber profiles, with hypothesis: slow dust drift never alarms, a
held obscuration above the threshold always does, steam alone never does."""

from detect.smoke import SmokeDetector
from hypothesis import given, settings
from hypothesis import strategies as st


def run(d, profile, start, end, step):
    states = set()
    t = start
    while t <= end:
        p = profile(t)
        states.add(d.update(t, *p) if isinstance(p, tuple) else d.update(t, p))
        t += step
    return states


@settings(max_examples=40, deadline=None)
@given(st.floats(0, 0.005), st.floats(0.05, 0.3), st.floats(-0.02, 0.02))
def test_dust_drift_within_range_never_alarms(per_hour, threshold, start):
    d = SmokeDetector(threshold=threshold)
    # a week of drift at up to 0.005 dB/m per hour, sampled every 5 minutes; the compensation
    # range may run out (fault) but it is never an alarm
    states = run(d, lambda t: start + per_hour * t / 3600, 0, 7 * 86400, 300)
    assert "alarm" not in states and "prealarm" not in states


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.3), st.floats(1.05, 5.0), st.floats(0.005, 0.1))
def test_smoke_above_threshold_alarms(threshold, over, rise_per_s):
    d = SmokeDetector(threshold=threshold)
    peak = threshold * over
    run(d, lambda t: 0.0 if t < 0 else min(peak, t * rise_per_s), -600, 0, 2)
    states = run(d, lambda t: min(peak, t * rise_per_s), 2, peak / rise_per_s + 60, 2)
    assert "alarm" in states


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.3), st.floats(0.0, 1.0), st.floats(12, 40), st.floats(-1, 1.5), st.floats(0.85, 1.2))
def test_steam_alone_never_alarms(threshold, fog, rh_jump, dt, gas_ratio):
    d = SmokeDetector(threshold=threshold)
    run(d, lambda t: (0.0, 24.0, 55.0, 100000), -900, 0, 2)
    states = run(d, lambda t: (fog, 24.0 + dt, min(100.0, 55.0 + rh_jump), 100000 * gas_ratio), 2, 300, 2)
    assert "alarm" not in states

"""Heat detector on the ramp / lag / noise simulator: the EN 54-5 class A1 windows over a grid of
rates x lags x noise seeds x sample periods, nuisance profiles, and hypothesis-generated profiles."""

import pytest
import sim
from detect.heat import HeatDetector
from hypothesis import example, given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("sample_s", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("rate", sim.RATES)
def test_alarm_lands_inside_en54_5_window(rate, sample_s):
    lo, hi = sim.A1_WINDOWS[rate]
    for tau in sim.TAUS:
        for seed in range(4):
            t = sim.heat_alarm_time(rate, tau, seed, sample_s=sample_s)
            assert t is not None and lo <= t <= hi, (rate, tau, seed, t)


def never(profile, duration_s, tau, seed, state="alarm"):
    return sim.first_state(HeatDetector(), profile, tau, duration_s, state=state, seed=seed) is None


@pytest.mark.parametrize("tau", [20, 60])
def test_nuisance_profiles_never_alarm(tau):
    profiles = {
        "heating on: +8 K in 10 min": sim.piecewise([(0, 20), (600, 28)]),
        "sun on the housing: +15 K in 20 min to 45": sim.piecewise([(0, 30), (1200, 45)]),
        "hot day to the 50 degC maximum and back": sim.piecewise([(0, 25), (3600, 50), (7200, 50), (10800, 25)]),
        "door opened in winter, heater back on": sim.piecewise([(0, 22), (60, 10), (600, 10), (900, 24)]),
    }
    for name, prof in profiles.items():
        for seed in range(3):
            assert never(prof, 11000, tau, seed, state="prealarm"), name


@st.composite
def benign(draw):
    """Piecewise-linear air profiles within the A1 application range: slopes up to 4 K/min,
    never above 50 degC."""
    t, temp = 0.0, draw(st.floats(0, 35))
    pts = [(t, temp)]
    for _ in range(draw(st.integers(1, 6))):
        dur = draw(st.floats(60, 1200))
        slope = draw(st.floats(-4, 4)) / 60
        temp = min(50.0, max(-10.0, temp + slope * dur))
        t += dur
        pts.append((t, temp))
    return pts


@settings(max_examples=60, deadline=None)
@given(benign(), st.sampled_from(sim.TAUS), st.integers(0, 1000))
def test_benign_profiles_never_alarm(points, tau, seed):
    assert never(sim.piecewise(points), points[-1][0] + 300, tau, seed)


@settings(max_examples=40, deadline=None)
@given(st.floats(66, 120), st.floats(0, 600), st.sampled_from(sim.TAUS), st.integers(0, 1000))
def test_any_fire_reaching_66_degC_alarms(peak, rise_s, tau, seed):
    prof = sim.piecewise([(0, 25), (rise_s, peak)])
    t = sim.first_state(HeatDetector(), prof, tau, rise_s + 10 * tau + 60, seed=seed)
    assert t is not None


@settings(max_examples=40, deadline=None)
@given(st.floats(20, 80), st.floats(20, 40))
@example(20.0, 20.000000000000004)  # exactly 20 K, where float rounding once made it miss
def test_jump_of_20_K_alarms_at_once(jump, start):
    d = HeatDetector()
    for t in range(0, 120, 2):
        d.update(t, start)
    assert d.update(120, start + jump) == "alarm"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.none(), st.just(float("nan")), st.floats(-1000, -40.01), st.floats(125.01, 1000)),
                min_size=1, max_size=5))
def test_impossible_readings_are_faults_not_alarms(bad):
    d = HeatDetector()
    d.update(0, 25.0)
    for i, v in enumerate(bad):
        assert d.update(2 + 2 * i, v) == "fault"
    assert d.update(100, 25.0) == "normal"

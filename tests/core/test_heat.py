# Heat detector (EN 54-5 A1R target): static, rate-of-rise, jump, faults, nuisance profiles.
# The full rate x lag x noise grid lives in tests/detection (CPython); these run on MicroPython too.
import math

from detect.heat import HeatDetector
from util import raises


def run(profile, duration_s, tau=30.0, sample_s=2.0, det=None, noise=0.0):
    """Feed a lagged air profile; returns (first prealarm time, first alarm time)."""
    d = det or HeatDetector()
    sensor = profile(-300.0)
    t = -300.0
    first = {}
    n = 0
    while t <= duration_s:
        n += 1
        jitter = noise * (((n * 7919) % 61) / 30.0 - 1.0)  # deterministic, within +-noise
        st = d.update(t, sensor + jitter)
        if st not in first:
            first[st] = t
        air = profile(t + sample_s / 2)
        sensor += (air - sensor) * (1 - math.exp(-sample_s / tau))
        t += sample_s
    return first.get("prealarm"), first.get("alarm")


def ramp(rate_k_min):
    return lambda t: 25.0 + max(0.0, t) * rate_k_min / 60.0


def test_settings_are_checked():
    assert raises(ValueError, HeatDetector, alarm_c=70)
    assert raises(ValueError, HeatDetector, alarm_c=50)
    assert raises(ValueError, HeatDetector, nonsense=1)
    assert HeatDetector(alarm_c=60, prealarm_c=55).s["alarm_c"] == 60


def test_impossible_readings_are_faults():
    d = HeatDetector()
    for v in (None, float("nan"), -41, 126, "hot"):
        assert d.update(0, v) == "fault", v
    assert d.update(2, 24.0) == "normal"


def test_static_thresholds():
    d = HeatDetector()
    assert d.update(0, 45.0) == "normal"
    d = HeatDetector()
    d.update(0, 53.0)
    assert d.update(60, 53.0) == "prealarm"
    d = HeatDetector()
    d.update(0, 59.0)
    assert d.update(60, 59.0) == "alarm" and d.cause == "static"


def test_rate_of_rise_inside_en54_5_windows():
    # (rate K/min, lower s, upper s) for class A1
    for rate, lo, hi in ((10, 60, 260), (20, 30, 140), (30, 20, 100)):
        for tau in (20.0, 60.0):
            pre, alarm = run(ramp(rate), hi + 60, tau=tau, noise=0.3)
            assert alarm is not None and lo <= alarm <= hi, (rate, tau, alarm)


def test_slow_ramp_alarms_on_the_static_threshold():
    pre, alarm = run(ramp(3), 900, tau=40.0)
    assert 433 <= alarm <= 820
    assert pre is not None and pre < alarm


def test_jump_alarms_at_once():
    d = HeatDetector()
    for t in range(0, 120, 2):
        d.update(t, 25.0)
    assert d.update(120, 47.0) == "alarm" and d.cause == "jump"


def test_heating_and_sun_do_not_alarm():
    heating = lambda t: 20.0 + min(max(t, 0.0), 600.0) / 600.0 * 8.0  # noqa: E731
    sun = lambda t: 30.0 + min(max(t, 0.0), 1200.0) / 1200.0 * 15.0  # noqa: E731
    for prof in (heating, sun):
        pre, alarm = run(prof, 3600, tau=20.0, noise=0.3)
        assert pre is None and alarm is None


def test_alarm_holds_until_clearly_cooler():
    d = HeatDetector()
    t = 0
    for v in (25, 59, 59, 59, 59, 59):
        d.update(t, float(v))
        t += 10
    assert d.state == "alarm"
    for _ in range(10):
        d.update(t, 56.5)
        t += 10
    assert d.state == "alarm"
    for _ in range(10):
        d.update(t, 40.0)
        t += 10
    assert d.state == "normal"

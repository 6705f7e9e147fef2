# Optical smoke chamber and the smoke detector (EN 54-7 band 1): thresholds, persistence, drift
# compensation and its fault, steam discrimination; synthetic smouldering / flaming / steam / dust.
from detect.smoke import SmokeDetector
from drivers.smoke_chamber import SmokeChamber, check_cal, obscuration
from util import raises


class Adc:
    def __init__(self, v):
        self.v = v

    def read_u16(self):
        return self.v


def feed(d, profile, start, end, step=2, **extra):
    """Run profile(t) -> obs (or (obs, t, rh, gas)); returns {state: first time}."""
    first = {}
    t = start
    while t <= end:
        p = profile(t)
        if isinstance(p, tuple):
            st = d.update(t, p[0], p[1], p[2], p[3])
        else:
            st = d.update(t, p, **extra)
        if st not in first:
            first[st] = t
        t += step
    return first


def test_chamber_converts_with_calibration():
    cal = {"clean": 5000, "per_db": 10000}
    assert obscuration(6500, cal) == 0.15
    c = SmokeChamber(Adc(7000), cal)
    assert c.read() == 0.2 and c.raw == 7000
    assert raises(ValueError, check_cal, {"clean": 5000})
    assert raises(ValueError, check_cal, {"clean": 5000, "per_db": 0})
    assert raises(ValueError, check_cal, {"clean": 70000, "per_db": 1})


def test_threshold_must_be_in_en54_7_band():
    assert raises(ValueError, SmokeDetector, threshold=0.04)
    assert raises(ValueError, SmokeDetector, threshold=0.31)
    assert raises(ValueError, SmokeDetector, colour="grey")
    assert SmokeDetector(threshold=0.05).s["threshold"] == 0.05


def test_flaming_fire_alarms_after_persistence():
    d = SmokeDetector()
    first = feed(d, lambda t: 0.0 if t < 0 else min(1.0, t * 0.02), -600, 120)
    assert 0 < first["prealarm"] < first["alarm"]
    assert first["alarm"] - 0.15 / 0.02 >= 10  # persist_s after crossing the threshold
    assert first["alarm"] <= 30


def test_smouldering_fire_is_not_learnt_away():
    d = SmokeDetector()
    first = feed(d, lambda t: 0.0 if t < 0 else t * 0.0002, -600, 1800)  # 0.012 dB/m per minute
    assert "alarm" in first and first["alarm"] < 900


def test_short_puff_does_not_alarm():
    d = SmokeDetector()
    first = feed(d, lambda t: 0.2 if 100 <= t < 106 else 0.0, 0, 400)
    assert "prealarm" in first and "alarm" not in first
    assert d.state == "normal"


def test_steam_holds_at_prealarm():
    d = SmokeDetector()

    def shower(t):
        if t < 0:
            return (0.0, 24.0, 60.0, 90000)
        return (0.25, 24.5, 92.0, 88000)  # fog in the chamber, humid, not hot, same gas
    first = feed(d, shower, -900, 600)
    assert "prealarm" in first and "alarm" not in first and d.steam


def test_smoke_with_humidity_and_gas_drop_is_not_steam():
    d = SmokeDetector()

    def fire(t):
        if t < 0:
            return (0.0, 24.0, 60.0, 90000)
        return (0.25, 24.5, 75.0, 30000)  # gas resistance falls: combustion products
    first = feed(d, fire, -900, 120)
    assert "alarm" in first and not d.steam


def test_dust_drift_is_compensated_then_faults():
    d = SmokeDetector()
    day = 86400
    # 0.02 dB/m per day of dust: compensated for days, no alarm, then a chamber fault
    first = feed(d, lambda t: t / day * 0.02, 0, 14 * day, step=600)
    assert "alarm" not in first and "prealarm" not in first
    assert 9 * day < first["fault"] < 11 * day
    assert "drift" in d.detail


def test_open_adc_input_is_a_fault():
    d = SmokeDetector()
    d.update(0, 0.0)
    assert d.update(2, -0.3) == "fault"
    assert d.update(4, None) == "fault"
    assert d.update(6, 0.0) == "normal"

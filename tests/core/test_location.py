# Location policy: a fresh, accurate GPS fix wins, else the fixed coordinates; loss and recovery.
from detect.location import LocationPolicy

FIXED = {"lat": 21.0285111, "lon": 105.8048169, "acc": 15}


def test_fixed_without_gps():
    p = LocationPolicy(FIXED)
    assert p.current(1000) == {"lat": 21.028511, "lon": 105.804817, "acc": 15, "src": "fixed", "age": 0}
    assert p.check(1000) is None


def test_fresh_accurate_gps_wins():
    p = LocationPolicy(FIXED, max_age_s=30, max_acc_m=50)
    p.gps_fix(10.7908671, 106.6687231, 8, 5000)
    loc = p.current(17500)
    assert loc == {"lat": 10.790867, "lon": 106.668723, "acc": 8, "src": "gps", "age": 12}


def test_stale_or_inaccurate_gps_falls_back():
    p = LocationPolicy(FIXED, max_age_s=30, max_acc_m=50)
    p.gps_fix(10.79, 106.67, 8, 5000)
    assert p.current(36000)["src"] == "fixed"
    p.gps_fix(10.79, 106.67, 80, 40000)
    assert p.current(40001)["src"] == "fixed"


def test_loss_and_recovery_transitions():
    p = LocationPolicy(FIXED, max_age_s=30)
    assert p.check(0) is None
    p.gps_fix(10.79, 106.67, 5, 1000)
    assert p.check(2000) is None  # first fix: nothing was lost
    assert p.check(20000) is None
    assert p.check(32000) == "lost"
    assert p.check(33000) is None
    p.gps_fix(10.79, 106.67, 5, 40000)
    assert p.check(40000) == "recovered"
    assert p.check(41000) is None


def test_fix_from_the_future_is_not_trusted():
    p = LocationPolicy(FIXED)
    p.gps_fix(10.79, 106.67, 5, 100)
    assert p.current(99)["src"] == "fixed"

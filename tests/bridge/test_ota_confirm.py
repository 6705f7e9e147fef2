"""When the bridge confirms an update (bridge/ota/rollout.py no_worse): the new version's self-test
passed, or it fails only what already failed before the update."""

from bridge.ota.rollout import failing_checks, no_worse

# self-test data as devices send it (firmware/app.py selftest, sensing.selftest)
PASSED = {"indicator": "ok", "outbox": 0, "heater": "ok", "chamber": "ok", "gps": "ok", "ok": True, "pass": True}
NO_SENSORS = {"indicator": "ok", "outbox": 0, "heater": "fail", "chamber": "ok", "gps": "fail", "ok": False,
              "pass": False}  # the emulated ESP32: no BME680, no GPS receiver


def test_a_passed_self_test_proves_the_new_version_with_or_without_a_baseline():
    assert no_worse(PASSED, None) and no_worse(PASSED, NO_SENSORS)


def test_failing_what_already_failed_before_the_update_proves_it():
    assert failing_checks(NO_SENSORS) == {"heater", "gps", "ok"}
    assert no_worse(NO_SENSORS, NO_SENSORS)
    assert no_worse(dict(NO_SENSORS, heater="ok"), NO_SENSORS)  # better than before


def test_breaking_a_check_that_worked_is_not_proof():
    assert not no_worse(dict(NO_SENSORS, chamber="fail"), NO_SENSORS)
    assert not no_worse(dict(PASSED, gps="fail", ok=False, **{"pass": False}), PASSED)


def test_a_failed_self_test_with_nothing_to_compare_with_is_not_proof():
    assert not no_worse(NO_SENSORS, None)
    assert not no_worse({"pass": False}, None)

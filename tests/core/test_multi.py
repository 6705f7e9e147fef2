# Multi-criteria: one criterion -> prealarm, confirmation -> alarm, restore; faults; evidence size.
import json

from detect.multi_criteria import MultiCriteria


def R(t=24.0, obs=0.0, rh=55.0, gas=100000, p=100900):
    return {"t": t, "obs": obs, "rh": rh, "gas": gas, "p": p}


def settle(m, until=0, start=-600):
    for s in range(start, until, 2):
        assert m.update(s, R()) == []


def test_smoke_prealarm_then_alarm_then_restore():
    m = MultiCriteria()
    settle(m)
    ev = m.update(0, R(obs=0.09))
    assert [(e[0], e[1]) for e in ev] == [("prealarm", "smoke")]
    got = []
    for s in range(2, 40, 2):
        got += m.update(s, R(obs=0.2))
    assert [(e[0], e[1]) for e in got] == [("alarm", "smoke")]
    got = []
    for s in range(40, 80, 2):
        got += m.update(s, R(obs=0.0))
    assert [(e[0], e[1]) for e in got] == [("restore", "smoke")]
    assert m.level == "normal"


def test_second_criterion_confirms_at_once():
    m = MultiCriteria()
    settle(m)
    ev = m.update(0, R(t=53.0, obs=0.09))  # heat prealarm (static) and smoke prealarm together
    assert [(e[0], e[1]) for e in ev] == [("alarm", "multi")]


def test_heat_alarm_and_evidence():
    m = MultiCriteria()
    settle(m)
    ev = []
    for s in range(0, 200, 2):
        ev += m.update(s, R(t=min(70.0, 24.0 + s * 0.5)))
    kinds = [(e[0], e[1]) for e in ev]
    assert kinds[-1] == ("alarm", "heat") and ("prealarm", "heat") in kinds
    data = ev[-1][2]
    assert data["t"] > 30 and data["obs"] == 0.0 and data["rh"] == 55.0
    hist = data["hist"]
    assert 8 <= len(hist) <= 12
    assert hist[-1][0] < 6 and hist[0][0] <= 60  # ages in seconds, oldest first
    assert hist[0][1] < hist[-1][1] <= int(round(data["t"] * 10))
    assert len(json.dumps(data, separators=(",", ":"))) < 600


def test_level_only_escalates_while_criteria_hold():
    m = MultiCriteria()
    settle(m)
    ev = []
    for s in range(0, 40, 2):
        ev += m.update(s, R(obs=0.2))
    for s in range(40, 60, 2):
        ev += m.update(s, R(obs=0.09))  # falling back to prealarm level: no new event
    assert [e[0] for e in ev] == ["prealarm", "alarm"]


def test_detector_faults_become_fault_and_restore_events():
    m = MultiCriteria()
    settle(m, start=-10)
    ev = m.update(0, R(t=130.0))
    assert ev == [("fault", "sensor", {"detail": "temperature reading impossible: 130.0"})]
    assert m.update(2, R(t=131.0)) == []
    assert [(e[0], e[1]) for e in m.update(4, R())] == [("restore", "sensor")]
    ev = m.update(6, R(obs=-0.3))
    assert ev[0][0] == "fault" and ev[0][1] == "chamber"


def test_missing_readings_are_skipped_not_faulted():
    m = MultiCriteria()
    assert m.update(0, {"t": None, "obs": None, "rh": None, "gas": None, "p": None}) == []


def test_smoke_only_device():
    m = MultiCriteria(use_heat=False)
    settle(m)
    got = []
    for s in range(0, 40, 2):
        got += m.update(s, R(t=90.0, obs=0.2))  # heat ignored: no heat detector fitted
    assert [(e[0], e[1]) for e in got] == [("prealarm", "smoke"), ("alarm", "smoke")]

# Supervised panel inputs (firmware/panel.py): the bands from the resistor network, the
# confirmation time, and the events each confirmed transition raises, with their refs.
import panel
from board.virtual import Board
from panel import Panel, classify, line_ohms, nominal, thresholds, volts
from util import device_config

NET = {"supply_v": 3.3, "r_pull": 4700, "r_eol": 4700, "r_alarm": 1000}
INPUTS = [{"name": "fire", "role": "fire", "zone": "Zone 1"}, {"name": "fault", "role": "fault"}]
DEV = "hn-t-0001-5eed0001-"


def near(a, b, tol=0.001):
    return abs(a - b) <= tol


class Rig:
    """A panel on simulated lines; emit() records the events and hands out ids as the app does."""

    def __init__(self, confirm_ms=500, zones=None):
        self.ohms = {"fire": NET["r_eol"], "fault": NET["r_eol"]}
        self.events = []
        self.saved = []
        self.outputs = []
        self.p = Panel(NET, INPUTS, confirm_ms, lambda n: volts(NET, self.ohms[n]), self.emit, zones)
        self.p.on_save = self.saved.append
        self.p.on_output = self.outputs.append

    def emit(self, type, cause, data, ref):
        eid = DEV + "%08d" % (len(self.events) + 1)
        self.events.append((eid, type, cause, data, ref))
        return eid

    def set(self, name, state):
        self.ohms[name] = line_ohms(NET, state)

    def run(self, ms, every=100):
        for _ in range(ms // every):
            self.p.step(every)

    def new(self, since):
        return [e[1:4] + (e[4],) for e in self.events[since:]]


def test_nominal_voltages_follow_the_divider():
    v = nominal(NET)
    assert v[0] == 0 and v[3] == 3.3
    assert near(v[2], 1.65)  # r_pull == r_eol: half the supply
    assert near(v[1], 3.3 * 824.324 / (4700 + 824.324))  # 4.7k || 1k = 824 ohms
    assert near(v[1], 0.4924, 0.001)


def test_band_edges_are_the_midpoints_between_the_nominal_voltages():
    e = thresholds(NET)
    v = nominal(NET)
    for k in range(3):
        assert near(e[k], (v[k] + v[k + 1]) / 2)
    assert near(e[0], 0.246, 0.001) and near(e[1], 1.071, 0.001) and near(e[2], 2.475, 0.001)


def test_edges_move_with_the_resistors():
    other = dict(NET, r_pull=3300, r_alarm=2200)
    assert thresholds(other) != thresholds(NET)
    assert classify(volts(other, line_ohms(other, "active")), thresholds(other)) == "active"
    assert classify(volts(other, line_ohms(other, "normal")), thresholds(other)) == "normal"


def test_classifier_bands():
    e = thresholds(NET)
    for v, want in ((0.0, "short"), (0.1, "short"), (0.245, "short"), (0.25, "active"), (0.49, "active"),
                    (1.06, "active"), (1.08, "normal"), (1.65, "normal"), (2.47, "normal"), (2.48, "open"),
                    (3.1, "open"), (3.3, "open")):
        assert classify(v, e) == want, (v, want)
    # each state's own resistance, and 5 % resistors either way, stay in their band
    for s in ("short", "active", "normal", "open"):
        assert classify(volts(NET, line_ohms(NET, s)), e) == s
    for k in (0.95, 1.05):
        net = dict(NET, r_eol=4700 * k, r_alarm=1000 * k)
        assert classify(volts(net, line_ohms(net, "active")), e) == "active"
        assert classify(volts(net, line_ohms(net, "normal")), e) == "normal"


def test_a_state_counts_only_after_the_confirmation_time():
    r = Rig(confirm_ms=500)
    r.set("fire", "active")
    r.run(400)  # the first reading counts no time: 300 ms held
    assert r.events == [] and r.p.status()["inputs"]["fire"] == "normal"
    r.run(300)
    assert [e[1:3] for e in r.events] == [("alarm", "panel")]


def test_a_flicker_shorter_than_the_confirmation_raises_nothing():
    r = Rig(confirm_ms=500)
    for _ in range(10):
        r.set("fire", "active")
        r.run(300)
        r.set("fire", "normal")
        r.run(300)
    assert r.events == []


def test_zero_confirmation_takes_the_first_reading():
    r = Rig(confirm_ms=0)
    r.set("fire", "active")
    r.p.step(100)
    assert [e[1:3] for e in r.events] == [("alarm", "panel")]


def test_fire_relay_alarm_and_restore_refer_to_each_other():
    r = Rig()
    r.set("fire", "active")
    r.run(1000)
    r.set("fire", "normal")
    r.run(1000)
    (a, t1, c1, d1, ref1), (b, t2, c2, d2, ref2) = r.events
    assert (t1, c1, d1, ref1) == ("alarm", "panel", {"input": "fire", "zone": "Zone 1"}, None)
    assert (t2, c2, d2, ref2) == ("restore", "panel", {"input": "fire", "zone": "Zone 1"}, a)


def test_fault_relay_is_a_panel_fault_never_an_alarm():
    r = Rig()
    r.set("fault", "active")
    r.run(1000)
    r.set("fault", "normal")
    r.run(1000)
    (f, t1, c1, d1, _), (_, t2, c2, d2, ref) = r.events
    assert (t1, c1, d1["input"]) == ("fault", "panel-fault", "fault") and "zone" not in d1
    assert (t2, c2, ref) == ("restore", "panel-fault", f)


def test_open_and_short_are_wiring_faults_with_restores():
    r = Rig()
    r.set("fire", "open")
    r.run(1000)
    r.set("fire", "normal")
    r.run(1000)
    r.set("fire", "short")
    r.run(1000)
    r.set("fire", "normal")
    r.run(1000)
    kinds = [(e[1], e[2]) for e in r.events]
    assert kinds == [("fault", "line-open"), ("restore", "line-open"), ("fault", "line-short"),
                     ("restore", "line-short")]
    assert r.events[1][4] == r.events[0][0] and r.events[3][4] == r.events[2][0]
    assert r.events[0][3]["input"] == "fire" and "3.30 V" in r.events[0][3]["detail"]


def test_open_turning_to_short_restores_one_fault_and_raises_the_other():
    r = Rig()
    r.set("fire", "open")
    r.run(1000)
    r.set("fire", "short")
    r.run(1000)
    assert [(e[1], e[2], e[4]) for e in r.events] == [
        ("fault", "line-open", None), ("restore", "line-open", r.events[0][0]), ("fault", "line-short", None)]


def test_a_cut_line_during_a_fire_keeps_the_alarm_standing():
    r = Rig()
    r.set("fire", "active")
    r.run(1000)
    r.set("fire", "open")  # the relay cannot be read through a cut line: no restore of the fire
    r.run(1000)
    assert [(e[1], e[2]) for e in r.events] == [("alarm", "panel"), ("fault", "line-open")]
    r.set("fire", "active")  # mended, relay still closed: the fault clears, no second alarm
    r.run(1000)
    assert [(e[1], e[2]) for e in r.events[2:]] == [("restore", "line-open")]
    r.set("fire", "normal")
    r.run(1000)
    assert (r.events[3][1], r.events[3][2], r.events[3][4]) == ("restore", "panel", r.events[0][0])


def test_the_ack_output_follows_the_latest_panel_alarm_accepted():
    r = Rig()
    r.run(200)
    assert r.outputs == [False]  # set at the first step
    r.set("fire", "active")
    r.run(1000)
    alarm = r.events[0][0]
    r.p.stage(alarm, "stored")
    assert not r.p.ack_on()
    r.p.stage("hn-t-0001-5eed0001-00000099", "accepted")  # another event's acceptance
    assert not r.p.ack_on()
    r.p.stage(alarm, "accepted")
    assert r.p.ack_on() and r.outputs == [False, True]
    r.set("fire", "normal")
    r.run(1000)
    assert r.outputs == [False, True, False]


def test_a_fault_relay_accepted_lights_nothing():
    r = Rig()
    r.set("fault", "active")
    r.run(1000)
    r.p.stage(r.events[0][0], "accepted")
    assert not r.p.ack_on()


def test_open_events_survive_a_reboot_without_a_second_alarm():
    r = Rig()
    r.set("fire", "active")
    r.set("fault", "short")
    r.run(1000)
    r.p.stage(r.events[0][0], "accepted")
    text = r.saved[-1]
    # the same panel after a reboot, the relay still closed and the line still short
    r2 = Rig()
    r2.ohms = dict(r.ohms)
    r2.p.restore(text)
    r2.run(1000)
    assert r2.events == [] and r2.p.ack_on()
    r2.set("fire", "normal")
    r2.set("fault", "normal")
    r2.run(1000)
    refs = sorted((e[2], e[4]) for e in r2.events)
    assert refs == sorted([("panel", r.events[0][0]), ("line-short", r.events[1][0])])
    r3 = Rig()
    r3.p.restore("garbage;fire x;nobody a 0 . .")  # what it cannot read it leaves alone
    assert r3.p.status()["inputs"] == {"fire": "normal", "fault": "normal"}


def test_an_event_the_heap_refused_stays_owed():
    r = Rig()
    real, fails = r.emit, [2]

    def emit(*a):
        if fails[0]:
            fails[0] -= 1
            raise MemoryError()
        return real(*a)

    r.p.emit = emit
    r.set("fire", "active")
    for _ in range(12):
        try:
            r.p.step(100)
        except MemoryError:
            pass
    assert [(e[1], e[2]) for e in r.events] == [("alarm", "panel")]


def test_device_zones_replace_the_boards():
    r = Rig(zones={"fire": "Tầng 1-5", "fault": "Tủ trung tâm"})
    r.set("fire", "active")
    r.set("fault", "active")
    r.run(1000)
    assert {e[3]["input"]: e[3]["zone"] for e in r.events} == {"fire": "Tầng 1-5", "fault": "Tủ trung tâm"}


def test_the_virtual_boards_lines_read_as_the_network_says():
    b = Board()
    b.setup({"sensors": [], "panel": dict(NET, inputs=INPUTS)}, {})
    adc = b.panel_adc("fire")
    assert near(adc.read_uv() / 1e6, 1.65)
    assert b.rig_panel("fire", None) and near(adc.read_uv() / 1e6, 3.3)
    b.rig_panel("fire", 0)
    assert adc.read_uv() == 0
    try:
        b.rig_panel("smoke", 0)
        raise AssertionError("an input the board lacks was taken")
    except ValueError as e:
        assert "fire" in str(e)
    b.ack_output(True)
    assert b.ack and b.panel_adc("nobody") is None


def test_the_panel_module_imports_nothing():
    # provisioning checks boards.yaml with this module's arithmetic on the host
    with open(panel.__file__) as f:
        top = [ln for ln in f if ln.startswith("import ") or ln.startswith("from ")]
    assert top == [], top


def test_device_config_panel_and_test_fields():
    import config

    c = config.validate(device_config())
    assert c["test_s"] == 86400 and c["panel_confirm_ms"] == 1000 and "panel_zones" not in c
    c = config.validate(device_config(test_s=0, panel_confirm_ms=0, panel_zones={"fire": "Tầng 1"}))
    assert c["test_s"] == 0 and c["panel_confirm_ms"] == 0
    for keys, words in (({"test_s": -1}, "'test_s' must not be negative"),
                        ({"test_s": 1.5}, "'test_s' must be int"),
                        ({"panel_confirm_ms": 60001}, "'panel_confirm_ms' must be at most 60000"),
                        ({"panel_zones": ["fire"]}, "'panel_zones' must be an object"),
                        ({"panel_zones": {"fire": ""}}, "'panel_zones.fire' must be a text of 1..100")):
        try:
            config.validate(device_config(**keys))
        except config.ConfigError as e:
            assert words in str(e), str(e)
        else:
            raise AssertionError("accepted %r" % keys)

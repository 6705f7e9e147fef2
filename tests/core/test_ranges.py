# Every number and string the host side takes has a range (docs/protocol.md section 11): each field of
# an event, a telemetry and a status body at its bounds is taken, and just past them refused with the
# reason. Portable: the same table runs on CPython and on MicroPython.
import protocol as p
import protocol_host as h

DEV = "hn-a-0001"
LOC = {"lat": 21.028511, "lon": 105.804817, "acc": 15, "src": "fixed", "age": 0}


class Raw:
    """JSON text put into the body as it is: what a dict cannot hold (1e999, a lone surrogate)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


DROP = Raw("(left out)")  # the field is removed


def _alarm():
    return p.event_body(DEV, 17, "alarm", "button", 1764412345, 812345, 3, dict(LOC), {})


def _cancel():
    return p.event_body(DEV, 18, "cancel", "button", 1764412345, 812345, 3, dict(LOC), {}, DEV + "-00000017")


def _telemetry():  # every field, as firmware/app.py sends it
    return {"v": 1, "dev": DEV, "up": 812345, "ts": 1764412345, "boot": 3, "heap_free": 60000,
            "heap_peak": 40000, "rssi": -61, "batt": {"v": 3.9, "pct": 80}, "outbox": 0,
            "r": {"t": 24.5, "rh": 55.0, "p": 100800, "gas": 120000, "obs": 0.012, "gps": None}}


def _birth():
    return p.birth_body("0.1.0", "esp32-devkitc", 3, 812, 1764412345)


def _set(body, path, value):
    obj = body
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[k]
    if value is DROP:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    if path == "ctr" and h._int(value):
        body["id"] = p.event_id(DEV, value)


def _verdict(check, make, path, value):
    body = make()
    _set(body, path, "@raw@" if isinstance(value, Raw) and value is not DROP else value)
    if isinstance(value, Raw) and value is not DROP:
        body = p.loads_object(p.dumps(body).replace(b'"@raw@"', value.text.encode()))
    try:
        check(body, DEV)
    except p.Refused as e:
        return e.reason
    return None


def _run(check, rows):
    assert len(rows) > 20
    wrong = []
    for make, path, value, want in rows:
        got = _verdict(check, make, path, value)
        if got != want:
            wrong.append("%s=%s: got %s, want %s" % (path, repr(value)[:40], got, want))
    assert not wrong, wrong


BAD = "bad-field"
INF, NAN = float("inf"), float("nan")
A, C, T, S = _alarm, _cancel, _telemetry, _birth


def test_event_fields_at_and_past_their_bounds():
    rows = [
        (A, "v", 1, None), (A, "v", 2, "bad-version"), (A, "v", True, "bad-version"),
        (A, "ctr", 0, None), (A, "ctr", h.CTR_MAX, None), (A, "ctr", h.CTR_MAX + 1, BAD), (A, "ctr", -1, BAD),
        (A, "ts", None, None), (A, "ts", 0, None), (A, "ts", h.TS_MAX, None), (A, "ts", h.TS_MAX + 1, BAD),
        (A, "ts", -1, BAD), (A, "ts", 1.5, BAD), (A, "ts", "1764412345", BAD), (A, "ts", True, BAD),
        (A, "ts", Raw("1" + "0" * 30), BAD), (A, "ts", Raw("1e999"), BAD), (A, "ts", DROP, "missing-field"),
        (A, "up", 0, None), (A, "up", h.UP_MAX, None), (A, "up", h.UP_MAX + 1, BAD), (A, "up", -1, BAD),
        (A, "up", Raw("1" + "0" * 30), BAD), (A, "up", None, BAD),
        (A, "boot", 0, None), (A, "boot", h.BOOT_MAX, None), (A, "boot", h.BOOT_MAX + 1, BAD), (A, "boot", -1, BAD),
        (A, "loc.lat", -90, None), (A, "loc.lat", 90.0, None), (A, "loc.lat", 90.000001, BAD),
        (A, "loc.lat", -90.000001, BAD), (A, "loc.lat", NAN, BAD), (A, "loc.lat", Raw("1e999"), BAD),
        (A, "loc.lon", -180, None), (A, "loc.lon", 180, None), (A, "loc.lon", 180.000001, BAD),
        (A, "loc.lon", Raw("-1e999"), BAD),
        (A, "loc.acc", 0, None), (A, "loc.acc", h.ACC_MAX, None), (A, "loc.acc", h.ACC_MAX + 1, BAD),
        (A, "loc.acc", -0.5, BAD), (A, "loc.acc", INF, BAD), (A, "loc.acc", Raw("1e999"), BAD),
        (A, "loc.age", 0, None), (A, "loc.age", h.AGE_MAX, None), (A, "loc.age", h.AGE_MAX + 1, BAD),
        (A, "loc.age", 0.5, BAD),
        (A, "loc.src", "gps", None), (A, "loc.src", "wifi", BAD),
        # a cancel's cause: any word of 1..MAX_CAUSE letters, digits, _ or -
        (C, "cause", "b" * h.MAX_CAUSE, None), (C, "cause", "b" * (h.MAX_CAUSE + 1), BAD), (C, "cause", "", BAD),
        (C, "cause", "long hold", BAD), (C, "cause", "button\n", BAD), (C, "cause", Raw('"\\ud800"'), BAD),
        # ref: an event id of this device, epoch or not, its counter within CTR_MAX
        (C, "ref", DEV + "-5eed0001-00000017", None), (C, "ref", DEV + "-%019d" % h.CTR_MAX, None),
        (C, "ref", DEV + "-" + "9" * 19, BAD), (C, "ref", DEV + "-0000017", BAD), (C, "ref", DEV + "-x", BAD),
        (C, "ref", DEV + "-0000001\u0663", BAD), (C, "ref", DEV + "-" + "0" * 7000, BAD),
        (C, "ref", Raw('"' + DEV + '-\\ud80000000017"'), BAD), (C, "ref", DROP, "missing-field"),
    ]
    _run(h.check_event, rows)


def test_event_data_bounded_in_depth_size_keys_and_values():
    deepest = {"a": {"b": {"c": {}}}}  # `data` and three levels below it
    rows = [
        (A, "data", {}, None), (A, "data", [], BAD), (A, "data", None, BAD), (A, "data", DROP, "missing-field"),
        (A, "data", {"t": 66.0, "hist": [[0, 661, 12, 30], [6, 655, None, 31]], "steam": 1}, None),
        (A, "data", {"indicator": "ok", "outbox": None, "pass": True}, None),
        (A, "data", deepest, None), (A, "data", {"a": {"b": {"c": {"d": {}}}}}, BAD),
        (A, "data", {"a": [[[]]]}, None), (A, "data", {"a": [[[[]]]]}, BAD),
        (A, "data", dict(("k%d" % i, i) for i in range(h.DATA_KEYS)), None),
        (A, "data", dict(("k%d" % i, i) for i in range(h.DATA_KEYS + 1)), BAD),
        (A, "data", {"k" * h.MAX_KEY: 1}, None), (A, "data", {"k" * (h.MAX_KEY + 1): 1}, BAD),
        (A, "data", {"": 1}, BAD), (A, "data", {"a b": 1}, BAD), (A, "data", {"t\u00e9": 1}, BAD),
        (A, "data", {"hist": list(range(h.DATA_ITEMS))}, None),
        (A, "data", {"hist": list(range(h.DATA_ITEMS + 1))}, BAD),
        (A, "data", {"t": h.NUM_MAX}, None), (A, "data", {"t": -h.NUM_MAX}, None),
        (A, "data", {"t": h.NUM_MAX * 10}, BAD), (A, "data", {"t": Raw("1e999")}, BAD),
        (A, "data", {"t": Raw("-1e999")}, BAD), (A, "data", {"t": Raw("1" + "0" * 30)}, BAD),
        (A, "data", {"t": NAN}, BAD), (A, "data", {"hist": [1, INF]}, BAD),
        (A, "data", {"detail": "x" * h.MAX_TEXT}, None), (A, "data", {"detail": "x" * (h.MAX_TEXT + 1)}, BAD),
        (A, "data", {"detail": "T\u1ea7ng 3: c\u1ea5u h\u00ecnh h\u1ecfng"}, None),
        (A, "data", {"detail": "a\nb"}, BAD), (A, "data", {"detail": "\x7f"}, BAD),
        (A, "data", {"detail": "\x9f"}, BAD), (A, "data", {"detail": Raw('"\\ud800"')}, BAD),
        (A, "data", {"detail": Raw('"\\udc00x"')}, BAD),
    ]
    _run(h.check_event, rows)


def test_telemetry_fields_at_and_past_their_bounds():
    rows = [(T, "v", 2, "bad-version"), (T, "v", DROP, "bad-version"),
            (T, "dev", DEV, None), (T, "dev", "hn-a-0002", "device-mismatch"), (T, "dev", "HN", BAD),
            (T, "ts", None, None), (T, "ts", h.TS_MAX, None), (T, "ts", h.TS_MAX + 1, BAD)]
    for key, lo, hi in (("up", 0, h.UP_MAX), ("boot", 0, h.BOOT_MAX), ("heap_free", 0, h.HEAP_MAX),
                        ("heap_peak", 0, h.HEAP_MAX), ("rssi", h.RSSI_MIN, h.RSSI_MAX),
                        ("outbox", 0, h.OUTBOX_MAX), ("ts", 0, h.TS_MAX)):
        rows += [(T, key, lo, None), (T, key, hi, None), (T, key, lo - 1, BAD), (T, key, hi + 1, BAD),
                 (T, key, Raw("1" + "0" * 30), BAD), (T, key, 1.5, BAD), (T, key, "1", BAD),
                 (T, key, DROP, None)]  # a field left out is no fault: a board may have none to report
    rows += [
        (T, "rssi", None, None), (T, "heap_free", None, BAD),
        (T, "batt", None, None), (T, "batt", [], BAD), (T, "batt", {}, None),
        (T, "batt.v", 0, None), (T, "batt.v", h.BATT_V_MAX, None), (T, "batt.v", h.BATT_V_MAX + 0.01, BAD),
        (T, "batt.v", -0.01, BAD), (T, "batt.v", Raw("1e999"), BAD), (T, "batt.v", NAN, BAD),
        (T, "batt.pct", 0, None), (T, "batt.pct", 100, None), (T, "batt.pct", 100.5, BAD), (T, "batt.pct", -1, BAD),
        (T, "r", {}, None), (T, "r", [], BAD), (T, "r", DROP, None),
        (T, "r.gps", {"lat": 10.79, "lon": 106.67, "acc": 5, "age": 2}, None),
        (T, "r.t", Raw("1e999"), BAD), (T, "r.t", h.NUM_MAX, None), (T, "r.gas", h.NUM_MAX * 2, BAD),
        (T, "r.t", "x" * (h.MAX_TEXT + 1), BAD),
        (T, "r", dict(("k%d" % i, 0) for i in range(h.DATA_KEYS + 1)), BAD),
        (T, "extra", {"unknown": "fields are ignored"}, None),
    ]
    _run(h.check_telemetry, rows)


def test_status_fields_at_and_past_their_bounds():
    rows = [
        (S, "v", 2, "bad-version"), (S, "v", DROP, "bad-version"),
        (S, "state", "offline", None), (S, "state", "sleeping", BAD), (S, "state", DROP, "missing-field"),
        (S, "dev", "hn-a-0002", "device-mismatch"),
        (S, "fw", "0.1.0+g1a2b3c", None), (S, "fw", "x" * h.MAX_NAME, None), (S, "fw", "x" * (h.MAX_NAME + 1), BAD),
        (S, "fw", "", BAD), (S, "fw", "0.1 beta", BAD), (S, "fw", 7, BAD), (S, "fw", Raw('"\\ud800"'), BAD),
        (S, "fw", DROP, None),
        (S, "board", "esp32-panic-battery", None), (S, "board", "b" * (h.MAX_NAME + 1), BAD),
        (S, "board", "virtual\x00", BAD), (S, "board", None, BAD),
        (S, "boot", 0, None), (S, "boot", h.BOOT_MAX, None), (S, "boot", h.BOOT_MAX + 1, BAD),
        (S, "boot", Raw("1" + "0" * 30), BAD), (S, "boot", -1, BAD),
        (S, "up", h.UP_MAX, None), (S, "up", h.UP_MAX + 1, BAD),
        (S, "ts", None, None), (S, "ts", h.TS_MAX, None), (S, "ts", h.TS_MAX + 1, BAD), (S, "ts", Raw("1e999"), BAD),
        (S, "extra", [1, 2], None),
    ]
    _run(h.check_status, rows)
    assert h.check_status(dict(p.OFFLINE), DEV) == p.OFFLINE  # the last will


def test_a_refusal_says_which_field_and_its_range():
    body = _alarm()
    body["loc"]["acc"] = h.ACC_MAX + 1
    try:
        h.check_event(body, DEV)
        raise AssertionError("taken")
    except p.Refused as e:
        assert e.reason == BAD and e.detail == "loc.acc must be a number 0..%d" % h.ACC_MAX, e.detail
    t = _telemetry()
    t["batt"]["pct"] = 101
    try:
        h.check_telemetry(t, DEV)
        raise AssertionError("taken")
    except p.Refused as e:
        assert e.detail == "batt.pct must be a number 0..100", e.detail

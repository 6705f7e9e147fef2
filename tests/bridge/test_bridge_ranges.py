"""Every number and string the bridge takes has a range (docs/protocol.md section 11): past one, a body
is refused with a reason and counted, never a database error. The rules themselves are tested field by
field on both interpreters in tests/core/test_ranges.py; here: the bridge's own reading of telemetry and
status, the writers that only see what passed, the table in the docs, and a real bridge and broker."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from bridge_harness import metric, wait_for

from bridge import db
from bridge.stages.parse import read_status, read_telemetry
from bridge.workers.supervision import apply_birth, apply_telemetry
from firmware import protocol, protocol_host
from firmware.protocol import Refused
from stack.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEV = "hn-t-0001"
BIG = "1" + "0" * 30  # 10**30: past SQLite's 64-bit integers
# what the store writer or a delivery worker says when a value reached it that it cannot take
DB_ERRORS = ("store batch failed", "cannot be written", "dropping a job", "Traceback", "OverflowError",
             "UnicodeEncodeError", "unexpected error", "cannot use the database", "delivery failed")


def telemetry(**over) -> dict:
    t = {"v": 1, "dev": DEV, "up": 812345, "ts": 1764412345, "boot": 3, "heap_free": 60000, "heap_peak": 40000,
         "rssi": -61, "batt": {"v": 3.9, "pct": 80}, "outbox": 0, "r": {"t": 24.5, "gps": None}}
    t.update(over)
    return t


def text(body: dict, **raw: str) -> bytes:
    """body as compact JSON, with the fields in `raw` spelled as the given JSON text (1e999, 10**30,
    a lone surrogate: what a dict cannot be dumped as)."""
    for k in raw:
        body = dict(body, **{k: f"@{k}@"})
    s = json.dumps(body, separators=(",", ":"))
    for k, v in raw.items():
        s = s.replace(f'"@{k}@"', v)
    return s.encode()


@pytest.mark.parametrize("payload,reason,detail", [
    (text(telemetry(), boot=BIG), "bad-field", "boot must be an int 0..4294967295"),
    (text(telemetry(), heap_free="1e999"), "bad-field", "heap_free must be an int"),
    (text(telemetry(), rssi="-1e999"), "bad-field", "rssi must be null or an int -128..127"),
    (text(telemetry(), batt='{"v":3.9,"pct":1e999}'), "bad-field", "batt.pct must be a number 0..100"),
    (text(telemetry(), r='{"t":1e999}'), "bad-field", "r: a number beyond"),
    (text(telemetry(), ts="NaN"), "bad-json", ""),
    (text(telemetry(dev="hn-t-0002")), "device-mismatch", ""),
    (text(telemetry(v=2)), "bad-version", "2"),
    (b"[1]", "bad-json", "not an object"),
])
def test_telemetry_out_of_range_is_refused_with_its_reason(payload, reason, detail):
    with pytest.raises(Refused) as e:
        read_telemetry(payload, DEV)
    assert e.value.reason == reason and detail in e.value.detail


def test_telemetry_as_the_firmware_sends_it_is_taken():
    t = read_telemetry(text(telemetry()), DEV)
    assert t["boot"] == 3 and t["batt"]["pct"] == 80
    assert read_telemetry(b'{"v":1,"rssi":null,"batt":null}', DEV)["rssi"] is None  # a field may be left out


@pytest.mark.parametrize("payload,reason,detail", [
    (text(protocol.birth_body("0.1.0", "virtual", 3, 812, 1764412345), boot=BIG), "bad-field", "boot"),
    (text(protocol.birth_body("0.1.0", "virtual", 3, 812, 1764412345), fw='"\\ud800"'), "bad-field", "fw must"),
    (text(protocol.birth_body("0.1.0", "x" * 33, 3, 812, 1764412345)), "bad-field", "board must"),
    (text(protocol.birth_body("0.1.0", "virtual", 3, 812, 1764412345), ts="1e999"), "bad-field", "ts must"),
    (b'{"v":1,"state":"dancing"}', "bad-field", "state must be online or offline"),
    (b'{"v":1}', "missing-field", "state"),
    (b'{"state":"online"}', "bad-version", "None"),
])
def test_status_out_of_range_is_refused_with_its_reason(payload, reason, detail):
    with pytest.raises(Refused) as e:
        read_status(payload, DEV)
    assert e.value.reason == reason and detail in e.value.detail


def test_birth_and_last_will_are_taken():
    assert read_status(protocol.dumps(protocol.birth_body("0.1.0", "virtual", 3, 812, None)), DEV)["fw"] == "0.1.0"
    assert read_status(protocol.dumps(protocol.OFFLINE), DEV) == protocol.OFFLINE


def test_the_writers_never_meet_a_value_sqlite_cannot_take(tmp_path):
    """They only see what read_telemetry/read_status passed; should a caller skip that, a value past
    its range is not written (NULL), never an error on the store writer's thread."""
    conn = db.connect(tmp_path / "b.db", durable=False)
    apply_telemetry(conn, DEV, telemetry(), 20, 1000.0)
    apply_birth(conn, DEV, protocol.birth_body("0.1.0", "virtual", 3, 812, None))
    junk = {"boot": 10**30, "rssi": 2**70, "heap_free": float("inf"), "outbox": -1,
            "batt": {"v": float("nan"), "pct": 10**30}}
    apply_telemetry(conn, DEV, junk, 20, 1001.0)
    apply_birth(conn, DEV, {"v": 1, "state": "online", "fw": "\ud800", "boot": 10**30})
    row = conn.execute("SELECT * FROM device_state WHERE id=?", (DEV,)).fetchone()
    assert (row["fw"], row["boot"]) == ("0.1.0", 3)  # kept, not overwritten with junk
    assert (row["rssi"], row["heap_free"], row["outbox"], row["batt_pct"], row["batt_v"]) == (None,) * 5
    conn.close()


def test_the_docs_table_is_the_code():
    """docs/protocol.md section 11 spells each bound as `NAME` = value; the value is the constant's."""
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = doc[doc.index("## 11. Ranges"):]
    spelled = dict(re.findall(r"`([A-Z][A-Z_0-9]+)` = (-?[0-9][0-9.e+]*)", section))
    want = ("CTR_MAX", "TS_MAX", "UP_MAX", "BOOT_MAX", "AGE_MAX", "ACC_MAX", "HEAP_MAX", "RSSI_MIN", "RSSI_MAX",
            "BATT_V_MAX", "OUTBOX_MAX", "NUM_MAX", "MAX_TEXT", "MAX_KEY", "MAX_NAME", "MAX_CAUSE", "DATA_DEPTH",
            "DATA_KEYS", "DATA_ITEMS", "ID_MIN", "ID_MAX", "MAX_PAYLOAD")
    assert sorted(spelled) == sorted(want), "the table and the list here name the same constants"
    for name, value in spelled.items():
        assert (float(value) if "e" in value or "." in value else int(value)) == getattr(protocol_host, name), name


def _signed(sim, body: dict, **raw: str) -> bytes:
    return bytes(protocol.frame(text(body, **raw), sim.a.hexmac))


def test_out_of_range_bodies_over_the_broker_are_counted_rejects_and_an_alarm_still_goes_through(
        fleet, broker, make_bridge):
    port = free_port()
    bridge = make_bridge(metrics={"host": "127.0.0.1", "port": port}).start()
    dev = fleet.sim(DEV, broker).connect()  # its birth: fw and boot written
    tel, st, ev = protocol.topic(DEV, "telemetry"), protocol.topic(DEV, "status"), protocol.topic(DEV, "event")
    loc = {"lat": 21.0245, "lon": 105.8412, "acc": 10, "src": "fixed", "age": 0}

    def event(ctr, type_="alarm", cause="button", ref=None, data=None):
        return protocol.event_body(DEV, ctr, type_, cause, 1764412345, 1000, 1, loc, data, ref)

    bad = [  # (topic, payload): every one past a range, each refused as bad-field
        (tel, text(telemetry(), boot=BIG)),
        (tel, text(telemetry(), rssi="1e999")),
        (tel, text(telemetry(), batt='{"v":3.9,"pct":' + BIG + "}")),
        (tel, text(telemetry(), r='{"a":{"b":{"c":{"d":{}}}}}')),
        (st, text(protocol.birth_body("0.1.0", "virtual", 3, 812, None), boot=BIG)),
        (st, text(protocol.birth_body("0.1.0", "virtual", 3, 812, None), fw='"\\ud800"')),
        (st, b'{"v":1,"state":"asleep"}'),
        (ev, _signed(dev, event(100), ts=BIG)),
        (ev, _signed(dev, event(101), up=BIG)),
        (ev, _signed(dev, event(102, data={"t": 1}), data='{"t":1e999}')),
        (ev, _signed(dev, event(103, "cancel", ref=f"{DEV}-00000001"), cause='"\\ud800"')),
        (ev, _signed(dev, event(104, "fault", "i2c"), data='{"detail":"\\udc00"}')),
        (ev, _signed(dev, event(105, "cancel", ref=f"{DEV}-" + "0" * 7000))),
    ]
    for topic, payload in bad:
        dev.publish_raw(topic, payload, qos=1)  # status not retained: a live one, judged
    alarm = dev.alarm()  # a valid alarm right behind them
    dev.wait_stage(alarm, "accepted")
    dev.telemetry(batt_pct=80)  # and valid telemetry still written

    def counted():
        conn = db.connect(bridge.db, readonly=True)
        try:
            return {r["reason"]: r["n"] for r in conn.execute("SELECT reason, n FROM rejects WHERE device=?", (DEV,))}
        finally:
            conn.close()
    assert wait_for(lambda: counted().get("bad-field", 0) >= len(bad) or None, timeout=10, step=0.2)
    assert counted() == {"bad-field": len(bad)}, "each counted once, with its reason, none as unstorable"
    assert metric(port, "baochay_rejected_total") == len(bad)

    conn = db.connect(bridge.db, readonly=True)
    try:
        stored = [r["id"] for r in conn.execute("SELECT id FROM events WHERE dev=?", (DEV,))]
        state = conn.execute("SELECT fw, boot, batt_pct FROM device_state WHERE id=?", (DEV,)).fetchone()
    finally:
        conn.close()
    assert stored == [alarm]
    assert (state["fw"], state["boot"]) == (dev.a.fw, dev.a.boot)
    assert wait_for(lambda: _batt(bridge.db) == 80 or None, timeout=5, step=0.2)

    log = bridge.log_path.read_text(encoding="utf-8").splitlines()
    assert not [ln for ln in log if any(e in ln for e in DB_ERRORS)]
    said = [json.loads(ln) for ln in log if '"message rejected"' in ln]
    assert len(said) == 1 and said[0]["reason"] == "bad-field", "one line per reason per 10 s, not one a message"
    assert said[0]["more_not_logged"] == 0 and "boot must be an int" in said[0]["detail"]

    # a flood of them: counted (or dropped over the device's limits), and the log grows by a few lines
    before = len(log)
    for i in range(300):
        dev.publish_raw(tel, text(telemetry(up=i), boot=BIG), qos=0)
        dev.publish_raw(st, b'{"v":1,"state":"online","boot":-%d}' % (i + 1), qos=0)
    again = dev.alarm()
    dev.wait_stage(again, "accepted")
    wait_for(lambda: metric(port, "baochay_rejected_total") + metric(port, "baochay_dropped_total")
             >= len(bad) + 600 or None, timeout=15, step=0.2)
    log = bridge.log_path.read_text(encoding="utf-8").splitlines()
    assert not [ln for ln in log if any(e in ln for e in DB_ERRORS)]
    assert len(log) - before <= 8, log[before:]


def _batt(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT batt_pct FROM device_state WHERE id=?", (DEV,)).fetchone()[0]
    finally:
        conn.close()

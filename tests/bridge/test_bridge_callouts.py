"""Contacts told of an alarm, in order, over SMPP to the reference SMSC: receipts, escalation when
nobody answers or a number cannot be reached, the reply that stops it, the fault when nobody answers.
A real bridge process, a real broker, the SMSC a process of its own."""

from __future__ import annotations

import json

import pytest
from bridge_harness import wait_for

from bridge import db
from stack.smsc import Smsc

CONTACTS = ("An=+84900000001", "Bình=+84900000002", "Chi=+84900000003")


@pytest.fixture
def smsc(tmp_path):
    s = Smsc(tmp_path / "smsc").start()
    yield s
    s.stop()


def _bridge(make_bridge, smsc, ack_s=2):
    bridge = make_bridge(notify={"type": "smpp", "ack_s": ack_s, "options": smsc.notify_options()}).start()
    r = bridge.cli("facilities", "set", "Toa nha A", "--name", "Tòa nhà A", *[a for c in CONTACTS for a in ("--contact", c)])
    assert r.returncode == 0, r.stderr
    return bridge


def _to(smsc, number):
    return [m for m in smsc.messages() if m["to"] == number]


def _callouts(bridge):
    conn = db.connect(bridge.db, readonly=True)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM callouts ORDER BY idx")]
    finally:
        conn.close()


def test_an_alarm_calls_its_contacts_in_order_until_one_answers(fleet, broker, make_bridge, smsc):
    bridge = _bridge(make_bridge, smsc)
    dev = fleet.sim("hn-t-0001", broker).connect()
    eid = dev.alarm()
    first = wait_for(lambda: _to(smsc, "84900000001"), timeout=15)
    text = first[0]["text"]
    assert text.startswith("BÁO CHÁY: Tòa nhà A") and eid in text and "Trả lời" in text, text
    assert first[0]["parts"] >= 2  # Vietnamese is UCS-2: a long message goes as concatenated parts
    wait_for(lambda: _callouts(bridge)[0]["delivered_at"], timeout=10)  # the network's receipt
    # nobody answers within ack_s: the second contact is told, and told why
    second = wait_for(lambda: _to(smsc, "84900000002"), timeout=15)
    assert "liên hệ số 2" in second[0]["text"]
    assert smsc.reply("84900000002", "Đã nhận, đang tới") == 1
    rows = wait_for(lambda: (lambda rs: rs if any(r["state"] == "acked" for r in rs) else None)(_callouts(bridge)),
                    timeout=10)
    assert [(r["idx"], r["state"]) for r in rows] == [(0, "passed"), (1, "acked")], rows
    assert rows[1]["reply"] == "Đã nhận, đang tới"
    text = bridge.cli("status").stdout
    assert "CALLOUTS" in text and "acked" in text and "Bình +84900000002" in text, text
    dev.wait_stage(eid, "stored")
    # a deliberate wait past ack_s: had the answer not stopped it, the third contact would be told now
    import time
    time.sleep(3)
    assert _to(smsc, "84900000003") == []
    assert "alarm acknowledged by its contact" in bridge.log_path.read_text()


def test_an_unreachable_number_goes_on_at_once_and_nobody_answering_is_a_fault(fleet, broker, make_bridge, smsc):
    smsc.unreachable("84900000001")
    bridge = _bridge(make_bridge, smsc, ack_s=1)
    dev = fleet.sim("hn-t-0002", broker).connect()
    eid = dev.alarm()
    wait_for(lambda: _to(smsc, "84900000003"), timeout=20)

    def fault():
        data = json.loads(bridge.cli("status", "--json").stdout)
        return [f for f in data["faults"] if f["kind"] == "callout"] or None
    faults = wait_for(fault, timeout=15, step=0.3)
    assert eid in faults[0]["reason"] and "none of the 3 contacts" in faults[0]["reason"]
    rows = _callouts(bridge)
    assert [r["state"] for r in rows] == ["undelivered", "passed", "passed"], rows
    assert "not delivered" in rows[0]["error"]


def test_facility_contacts_are_checked_and_warned_about(make_bridge, smsc):
    bridge = make_bridge()
    bad = bridge.cli("facilities", "set", "Toa nha A", "--contact", "An=12ab")
    assert bad.returncode == 2 and "8 to 15 digits" in bad.stderr
    few = bridge.cli("facilities", "set", "Toa nha B", "--contact", "+84900000009")
    assert few.returncode == 0 and "at least 3 numbers" in few.stderr and "no registered device" in few.stderr
    listed = json.loads(bridge.cli("facilities", "list", "--json").stdout)
    [b] = listed
    assert (b["id"], b["name"], b["contacts"]) == ("Toa nha B", "", [{"name": "", "phone": "+84900000009"}])
    assert (b["type"], b["floors_above"], b["hazards"], b["water_sources"]) == ("", None, [], [])  # not recorded

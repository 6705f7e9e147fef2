"""Each pipeline stage on its own: no MQTT, no HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from pathlib import Path

import pytest

from bridge import pipeline
from bridge.registry import Device
from bridge.stages import ack, enrich, verify
from bridge.stages.authenticate import CONFLICT, DUPLICATE, LATE, NEW, classify
from firmware import protocol
from firmware.protocol import Refused

KEY = bytes(range(32))
DEV = "hn-a-0001"
TOPIC = protocol.topic(DEV, "event")


def body(**over) -> dict:
    b = {"v": 1, "id": f"{DEV}-00000017", "dev": DEV, "ctr": 17, "type": "alarm", "cause": "button",
         "ts": 1764412345, "up": 812345, "boot": 3,
         "loc": {"lat": 21.028511, "lon": 105.804817, "acc": 15, "src": "fixed", "age": 0}, "data": {}}
    b.update(over)
    return b


def signed(b: dict, key: bytes = KEY) -> bytes:
    raw = json.dumps(b, separators=(",", ":")).encode()
    return raw + b"\n" + hmac.new(key, raw, hashlib.sha256).hexdigest().encode()


def accept(payload: bytes, topic: str = TOPIC) -> dict:
    _frame, ev = pipeline.admit(topic, payload, lambda d: KEY if d == DEV else None)
    return ev


def reason(payload: bytes, topic: str = TOPIC) -> str:
    with pytest.raises(Refused) as e:
        accept(payload, topic)
    return e.value.reason


def test_protocol_example_event_is_accepted():
    ev = accept(signed(body()))
    assert ev["id"] == "hn-a-0001-00000017" and ev["loc"]["src"] == "fixed"


@pytest.mark.parametrize("payload,why", [
    (b"x" * 9000, "too-large"),
    (b'{"v":1}', "unsigned"),
    (b'{"v":1}\nABCD', "bad-signature-format"),
    (b'{"v":1}\n' + b"0" * 64, "bad-signature"),
])
def test_frame_rejections(payload, why):
    assert reason(payload) == why


def test_unknown_device_and_topic_mismatch():
    assert reason(signed(body()), protocol.topic("hn-z-9999", "event")) == "unknown-device"
    assert reason(signed(body()), protocol.topic("x", "event")) == "bad-topic"
    other = body(dev="hn-a-0002", id="hn-a-0002-00000017")
    assert reason(signed(other)) == "device-mismatch"


@pytest.mark.parametrize("over,why", [
    ({"v": 2}, "bad-version"),
    ({"v": True}, "bad-version"),
    ({"id": "hn-a-0001-17"}, "bad-field"),
    ({"type": "party"}, "bad-field"),
    ({"cause": "selftest"}, "bad-field"),
    ({"ctr": -1}, "bad-field"),
    ({"ts": "now"}, "bad-field"),
    ({"loc": {"lat": 91, "lon": 0, "acc": 1, "src": "gps", "age": 1}}, "bad-field"),
    ({"loc": {"lat": 1, "lon": 0, "acc": 1, "src": "wifi", "age": 1}}, "bad-field"),
    ({"data": []}, "bad-field"),
    ({"type": "cancel"}, "missing-field"),
    ({"type": "cancel", "ref": "hn-b-0001-00000001"}, "bad-field"),
])
def test_schema_rejections(over, why):
    assert reason(signed(body(**over))) == why


def test_missing_fields_and_bad_json_after_a_good_signature():
    b = body()
    del b["boot"]
    assert reason(signed(b)) == "missing-field"
    raw = b"[1,2]"
    assert reason(raw + b"\n" + hmac.new(KEY, raw, hashlib.sha256).hexdigest().encode()) == "bad-json"
    raw = b'{"v":NaN}'
    assert reason(raw + b"\n" + hmac.new(KEY, raw, hashlib.sha256).hexdigest().encode()) == "bad-json"


def test_classification_never_discards_an_authentic_event_that_was_never_stored():
    b = b"body"
    assert classify(b, 5, None, None) == NEW
    assert classify(b, 6, None, 5) == NEW
    assert classify(b, 5, b"body", 5) == DUPLICATE
    assert classify(b, 5, b"other body", 5) == CONFLICT
    assert classify(b, 4, None, 5) == LATE  # a lost frame sent again, or overtaken: kept, marked late
    assert classify(b, 5, None, 5) == LATE


def test_ack_frame_opens_with_the_firmware_signer():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "firmware"))
    from sign import Signer

    def opened(frame, key=KEY):
        return json.loads(protocol.open_frame(frame, Signer(key).hexmac))

    frame = ack.ack_frame(KEY, "hn-a-0001-00000017", "accepted", incident="INC-7", now=1764412345)
    assert opened(frame) == {"v": 1, "id": "hn-a-0001-00000017", "stage": "accepted", "incident": "INC-7",
                             "ts": 1764412345}
    with pytest.raises(Refused) as e:
        opened(frame, bytes(32))
    assert e.value.reason == "bad-signature"
    failed = opened(ack.ack_frame(KEY, "e", "failed", reason="refused"))
    assert failed["reason"] == "refused" and "incident" not in failed
    why = "từ chối: thiếu địa chỉ"  # a sink's reply quoted in a reason travels as raw UTF-8
    raw = ack.ack_frame(KEY, "e", "failed", reason=why)
    assert why.encode() in raw and opened(raw)["reason"] == why
    cmd = opened(ack.command_frame(KEY, "identify", 1764412345123))
    assert cmd == {"v": 1, "cmd": "identify", "ctr": 1764412345123, "args": {}}
    with pytest.raises(ValueError):
        ack.command_frame(KEY, "format-disk", 1)


def test_stages_only_move_forward():
    assert ack.is_ahead("forwarded", "stored") and ack.is_ahead("accepted", "forwarded")
    assert not ack.is_ahead("stored", "forwarded")
    assert not ack.is_ahead("forwarded", "failed") and not ack.is_ahead("stored", "failed")


def test_accepted_is_final_and_supersedes_failed():
    for stage in protocol.ACK_STAGES:
        assert not ack.is_ahead(stage, "accepted")  # an accepted alarm never turns into failed
    assert ack.is_ahead("failed", "forwarded") and ack.is_ahead("failed", "stored")
    assert ack.is_ahead("accepted", "failed")  # a late acceptance is still the better news


def test_verify_confidence_and_reasons():
    press, r = verify.assess(body(), verify.Context())
    assert 0.7 <= press <= 0.9 and "manual call point" in r[0]
    heat = body(cause="heat", data={"t": 63.0})
    hot, r = verify.assess(heat, verify.Context())
    lukewarm, _ = verify.assess(body(cause="heat", data={"t": 31.0}), verify.Context())
    assert hot > lukewarm and any("63.0" in x for x in r)
    backed, r = verify.assess(heat, verify.Context(corroborating=["a", "b"], building="A"))
    assert backed > hot and any("corroborated by 2" in x for x in r)
    faulty, r = verify.assess(heat, verify.Context(open_faults=["sensor"]))
    assert faulty < hot and any("fault" in x for x in r)
    cancelled, r = verify.assess(body(), verify.Context(cancelled_by="hn-a-0001-00000018"))
    assert cancelled < press and any("cancelled" in x for x in r)
    steam, r = verify.assess(body(cause="smoke", data={"obs": 0.02, "rh": 97, "t": 30}), verify.Context())
    assert any("steam" in x for x in r)
    for typ, cause in (("test", "selftest"), ("fault", "sensor"), ("restore", "sensor")):
        c, r = verify.assess(body(type=typ, cause=cause), verify.Context())
        assert 0 <= c <= 1 and r  # never silent
    c, r = verify.assess(body(type="restore", cause="heat"), verify.Context())
    assert c == 0 and "heat condition cleared" in r[0]


DEVICE = Device(id=DEV, key=KEY, board="esp32-devkitc", building="Toa nha A", address="1 Trang Tien",
                floor="3", room="301", lat=21.0245, lon=105.8412, acc=8.0, contact_phone="+84 24 1",
                province="Ha Noi")


@pytest.mark.parametrize("loc,src,lat", [
    ({"lat": 21.1, "lon": 105.9, "acc": 5, "src": "gps", "age": 10}, "gps", 21.1),  # fresh and accurate
    ({"lat": 21.1, "lon": 105.9, "acc": 5, "src": "gps", "age": 600}, "fixed", 21.0245),  # stale
    ({"lat": 21.1, "lon": 105.9, "acc": 400, "src": "gps", "age": 1}, "fixed", 21.0245),  # vague
    ({"lat": 21.1, "lon": 105.9, "acc": 15, "src": "fixed", "age": 0}, "fixed", 21.0245),  # registry wins
])
def test_enrich_location_choice(loc, src, lat):
    got = enrich.choose_location(loc, DEVICE, enrich.LocationPolicy(gps_max_age_s=60, gps_max_acc_m=50))
    assert got.source == src and got.lat == lat


def test_enrich_builds_the_report():
    rep = enrich.build_report(body(), DEVICE, 1764412346.5, f"{DEV}-00000017", 0.8, ("x",), enrich.LocationPolicy())
    assert rep.site.building == "Toa nha A" and rep.site.floor == "3" and rep.site.contact_phone == "+84 24 1"
    assert rep.occurred_at == 1764412345 and rep.received_at == 1764412346.5
    assert rep.references is None and rep.incident_id is None and rep.board == "esp32-devkitc"
    cancel = body(type="cancel", id=f"{DEV}-00000018", ctr=18, ref=f"{DEV}-00000017", ts=None)
    upd = enrich.build_report(cancel, DEVICE, 10.0, f"{DEV}-00000017", 0.05, ("c",), enrich.LocationPolicy(),
                              incident_id="INC-1")
    assert upd.is_update and upd.references == f"{DEV}-00000017" and upd.incident_id == "INC-1"
    assert upd.occurred_at == 10.0  # no device clock: the bridge's receipt time

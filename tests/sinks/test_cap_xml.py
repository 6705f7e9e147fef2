"""CAP 1.2 alerts for every kind of report, validated against the OASIS schema and our own checks."""

import dataclasses

import pytest
from cap_check import NS, check
from sink_helpers import SITE, follow_up, make_report

from bridge.report import Facility, Location
from bridge.sinks import cap_xml
from bridge.sinks.cap import CapSink

ORIGINAL = make_report()
KINDS = {
    "alarm": ORIGINAL,
    "prealarm": make_report(type="prealarm", confidence=0.95),
    "escalation": follow_up(make_report(type="prealarm"), 1, "alarm"),
    "cancel": follow_up(ORIGINAL, 1, "cancel", "button"),
    "restore": follow_up(ORIGINAL, 2, "restore", "smoke"),
    "fault": make_report(type="fault", cause="chamber", readings={"detail": "chamber drift beyond range"}),
    "test": make_report(type="test", cause="selftest", readings={}),
    "button": make_report(cause="button", readings={}),
}


def texts(root, path):
    return [e.text for e in root.iterfind(path, NS)]


@pytest.fixture
def sink(tmp_path):
    return CapSink("cap", spool_dir=str(tmp_path / "spool"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_report_is_valid_cap(sink, kind):
    report = KINDS[kind]
    if report.references:  # the alert it refers to went out first
        sink.send(
            make_report(event_id=report.references, type="prealarm" if kind == "escalation" else "alarm")
        )
    sink.send(report)
    root = check(sink.last_xml)
    assert texts(root, "cap:info/cap:language") == ["vi-VN", "en-US"]
    assert texts(root, "cap:sent")[0].endswith("+07:00")


@pytest.mark.parametrize(
    "kind,msg_type,status,urgency,severity,certainty,category",
    [
        ("alarm", "Alert", "Actual", "Immediate", "Severe", "Observed", "Fire"),
        ("prealarm", "Alert", "Actual", "Expected", "Moderate", "Likely", "Fire"),
        ("escalation", "Update", "Actual", "Immediate", "Severe", "Observed", "Fire"),
        ("cancel", "Cancel", "Actual", "Past", "Minor", "Observed", "Fire"),
        ("restore", "Update", "Actual", "Past", "Minor", "Observed", "Fire"),
        ("fault", "Alert", "Actual", "Future", "Minor", "Observed", "Fire"),
        ("test", "Alert", "Test", "Unknown", "Unknown", "Unknown", "Fire"),
    ],
)
def test_message_type_and_assessment(kind, msg_type, status, urgency, severity, certainty, category):
    root = check(cap_xml.build(KINDS[kind], "s@x", [("a", "2025-11-29T17:32:25+07:00")])[2])
    assert texts(root, "cap:msgType") == [msg_type]
    assert texts(root, "cap:status") == [status]
    for path, want in (
        ("urgency", urgency),
        ("severity", severity),
        ("certainty", certainty),
        ("category", category),
    ):
        assert texts(root, f"cap:info/cap:{path}") == [want, want]


@pytest.mark.parametrize(
    "confidence,certainty", [(0.95, "Observed"), (0.7, "Likely"), (0.4, "Possible"), (0.1, "Unlikely")]
)
def test_certainty_follows_the_bridges_confidence(confidence, certainty):
    root = check(cap_xml.build(make_report(confidence=confidence), "s@x", [])[2])
    assert texts(root, "cap:info/cap:certainty") == [certainty] * 2


def test_panic_button_is_a_rescue_call():
    root = check(cap_xml.build(make_report(cause="button"), "s@x", [], panic=True)[2])
    assert texts(root, "cap:info/cap:category") == ["Rescue", "Rescue"]
    assert texts(root, "cap:info/cap:event") == ["Báo động khẩn cấp", "Emergency call (panic button)"]


def test_updates_and_cancels_reference_the_original_alert(sink):
    first = sink.send(ORIGINAL)
    sent = texts(check(sink.last_xml), "cap:sent")[0]
    for n, kind in ((1, "cancel"), (2, "restore")):
        sink.send(follow_up(ORIGINAL, n, kind, "button"))
        root = check(sink.last_xml)
        assert texts(root, "cap:references") == [f"baochay-edge@localhost,{first.ref},{sent}"]
        assert texts(root, "cap:incidents") == [first.ref]


def test_escalation_references_the_incidents_first_alert_and_the_one_it_updates(sink):
    pre = make_report(type="prealarm")
    alarm = follow_up(pre, 1, "alarm")
    alarm2 = dataclasses.replace(follow_up(pre, 2, "alarm"), references=alarm.event_id)
    for r in (pre, alarm, alarm2):
        sink.send(r)
    refs = texts(check(sink.last_xml), "cap:references")[0].split()
    assert [r.split(",")[1] for r in refs] == [
        "baochay-edge.hn-a-0001-00000017",
        "baochay-edge.hn-a-0001-00000018",
    ]


def test_reference_to_an_alert_this_sink_never_sent_is_estimated_and_says_so(sink):
    sink.send(follow_up(ORIGINAL, 1, "cancel", "button"))
    root = check(sink.last_xml)
    assert texts(root, "cap:references")[0].split(",")[1] == "baochay-edge.hn-a-0001-00000017"
    assert "estimated" in texts(root, "cap:note")[0]


def test_identifier_is_deterministic_and_safe():
    a = cap_xml.build(ORIGINAL, "s@x", [])
    b = cap_xml.build(ORIGINAL, "s@x", [])
    assert a == b  # a retried report is byte-identical
    odd = cap_xml.identifier_for("dev 1,<&>", "p")
    assert cap_xml.IDENTIFIER_OK.fullmatch(odd) and odd != cap_xml.identifier_for("dev-1----", "p")


def test_info_carries_headline_readings_instruction_parameters_and_area():
    root = check(cap_xml.build(ORIGINAL, "s@x", [])[2])
    vi, en = root.findall("cap:info", NS)
    assert en.findtext("cap:headline", namespaces=NS) == f"Fire alarm: {SITE.building}, {SITE.address}"
    assert "Temperature 41.5 °C" in en.findtext("cap:description", namespaces=NS)
    assert "Nhiệt độ 41.5 °C" in vi.findtext("cap:description", namespaces=NS)
    assert SITE.contact_phone in en.findtext("cap:instruction", namespaces=NS)
    params = {
        p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
        for p in en.iterfind("cap:parameter", NS)
    }
    assert params["deviceId"] == "hn-a-0001" and params["board"] == "esp32-devkitc"
    assert (params["floor"], params["room"], params["confidence"]) == ("3", "305", "0.92")
    assert params["confidenceReasons"].startswith("optical 0.21 dB/m")
    assert en.findtext("cap:area/cap:areaDesc", namespaces=NS) == f"{SITE.building}, {SITE.address}"
    assert en.findtext("cap:area/cap:circle", namespaces=NS) == "21.028511,105.804817 0.015"


def test_gps_fix_radius_and_southern_western_coordinates():
    loc = Location(lat=-33.865143, lon=-151.2099, accuracy_m=2500, source="gps", fix_age_s=12)
    root = check(cap_xml.build(make_report(location=loc), "s@x", [])[2])
    assert texts(root, "cap:info/cap:area/cap:circle")[0] == "-33.865143,-151.209900 2.500"


def test_utc_offset_zero_is_written_as_plus_zero_not_z():
    root = check(cap_xml.build(ORIGINAL, "s@x", [], utc_offset_h=0)[2])
    assert texts(root, "cap:sent") == ["2025-11-29T10:32:25+00:00"]


def test_long_headline_is_shortened():
    site = dataclasses.replace(SITE, address="x" * 300)
    root = check(cap_xml.build(make_report(site=site), "s@x", [])[2])
    assert all(len(h) <= cap_xml.HEADLINE_MAX for h in texts(root, "cap:info/cap:headline"))


def test_schema_check_catches_a_z_timestamp():
    xml = cap_xml.build(ORIGINAL, "s@x", [])[2].replace(b"+07:00</sent>", b"Z</sent>")
    with pytest.raises(AssertionError):
        check(xml)


FACILITY = Facility(id="Tòa nhà Sông Hồng", name="Tòa nhà Sông Hồng", type="apartment", floors_above=25,
                    floors_below=3, occupancy_day=600, occupancy_night=1400, hazards=("gas", "fuel"),
                    hazards_other="kho sơn tầng hầm", water_sources=("Trụ nước trước cổng, 15 m",),
                    contacts=(("Ban quản lý", "+842438250000"), ("Bảo vệ", "0901000001")))


def test_the_unit_codes_are_geocodes_and_the_facility_record_parameters_in_each_language():
    site = dataclasses.replace(SITE, ward="Phường Cửa Nam", ward_code="00073", province_code="01")
    root = check(cap_xml.build(make_report(site=site, facility=FACILITY), "s@x", [])[2])
    vi, en = root.findall("cap:info", NS)
    for info in (vi, en):
        geo = [(g.findtext("cap:valueName", namespaces=NS), g.findtext("cap:value", namespaces=NS))
               for g in info.iterfind("cap:area/cap:geocode", NS)]
        assert geo == [("VN-ward", "00073"), ("VN-province", "01")]
    params = [{p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
               for p in info.iterfind("cap:parameter", NS)} for info in (vi, en)]
    for p in params:
        assert (p["facilityId"], p["facilityType"], p["floorsAboveGround"], p["floorsBelowGround"]) == (
            "Tòa nhà Sông Hồng", "apartment", "25", "3")
        assert (p["occupancyDay"], p["occupancyNight"], p["hazards"]) == ("600", "1400", "gas, fuel")
        assert p["waterSources"] == "Trụ nước trước cổng, 15 m"
        assert (p["contact1"], p["contact2"]) == ("Ban quản lý +842438250000", "Bảo vệ 0901000001")
        assert "contact3" not in p
    assert params[0]["facilityTypeName"].startswith("Nhà chung cư")
    assert params[1]["facilityTypeName"].startswith("Apartment building")
    assert params[0]["hazardsText"].endswith("; kho sơn tầng hầm") and "Fuel gas" in params[1]["hazardsText"]


def test_without_codes_or_facility_there_is_no_geocode_and_no_facility_parameter():
    root = check(cap_xml.build(ORIGINAL, "s@x", [])[2])
    assert texts(root, "cap:info/cap:area/cap:geocode/cap:value") == []
    assert not [n for n in texts(root, "cap:info/cap:parameter/cap:valueName") if n.startswith("facility")]
    unknown = Facility(id="Chợ B")  # a record with nothing but its id: only the id goes out
    root = check(cap_xml.build(make_report(facility=unknown), "s@x", [])[2])
    assert [n for n in texts(root, "cap:info[1]/cap:parameter/cap:valueName") if n.startswith("facility")] == [
        "facilityId"]

"""The facility record an alarm carries, end to end: from a real broker through a real bridge process
to the reference 114 intake (a real process, which validates, stores and shows it) and, beside it, as
a CAP 1.2 alert whose geocodes are the address's official 2025 unit codes and whose parameters are the
facility record."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest
from test_bridge_facility import ADDRESS, RECORD

from stack.intake import Intake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sinks"))
from cap_check import NS, check  # noqa: E402


@pytest.fixture
def intake114(tmp_path):
    server = Intake(tmp_path / "intake" / "intake.db").start()
    yield server
    server.stop()


def test_an_alarm_reaches_114_and_cap_with_the_facility_record_and_the_unit_codes(
        tmp_path, fleet, broker, make_bridge, intake114):
    spool = tmp_path / "cap-spool"
    bridge = make_bridge(
        sinks=[{"name": "intake114", "type": "intake-json", "url": intake114.url, "token": intake114.token,
                "client": intake114.client},
               {"name": "cap", "type": "cap", "spool_dir": str(spool)}],
        accepted_from="intake114")
    fleet.register(bridge.db, address=ADDRESS, province="")
    r = bridge.cli("facilities", "set", "Toa nha A", *RECORD)
    assert r.returncode == 0, r.stderr
    bridge.start()
    dev = fleet.sim("hn-t-0001", broker).connect()
    eid = dev.alarm()
    incident_id = dev.wait_stage(eid, "accepted")["incident"]

    incident = intake114.incident(incident_id)
    assert (incident["ward"], incident["ward_code"], incident["province_code"]) == ("Phường Cửa Nam", "00073", "01")
    f = incident["facility"]
    assert f == incident["report"]["facility"]  # stored as received, and summarised
    assert (f["id"], f["name"], f["type"]) == ("Toa nha A", "Tòa nhà A", "apartment")
    assert f["type_name"]["en"].startswith("Apartment building")
    assert (f["floors_above"], f["floors_below"], f["occupancy_day"], f["occupancy_night"]) == (12, 2, 300, 450)
    assert f["hazards"] == ["gas", "fuel"] and f["hazards_other"] == "kho sơn ở tầng hầm"
    assert f["water_sources"] == ["Trụ nước cổng chính, 20 m", "Hồ Hoàn Kiếm, 300 m"]
    assert [(c["name"], c["phone"]) for c in f["contacts"]] == [
        ("An", "0901234567"), ("Bình", "+842438250000"), ("Bảo vệ", "+84900000003")]
    # the intake's page shows it to the 114 operator
    with urllib.request.urlopen(f"{intake114.url}/", timeout=10) as page:
        html = page.read().decode()
    assert "Hồ Hoàn Kiếm, 300 m" in html and "00073 / 01" in html and "+842438250000" in html

    cap = spool / f"baochay-edge.{eid}.xml"
    root = check(cap.read_bytes())  # the OASIS schema and our checks
    for info in root.iterfind("cap:info", NS):
        codes = {g.findtext("cap:valueName", namespaces=NS): g.findtext("cap:value", namespaces=NS)
                 for g in info.iterfind("cap:area/cap:geocode", NS)}
        assert codes == {"VN-ward": "00073", "VN-province": "01"}
        params = {p.findtext("cap:valueName", namespaces=NS): p.findtext("cap:value", namespaces=NS)
                  for p in info.iterfind("cap:parameter", NS)}
        assert params["facilityType"] == "apartment" and params["floorsAboveGround"] == "12"
        assert params["occupancyNight"] == "450" and params["hazards"] == "gas, fuel"
        assert params["contact1"] == "An 0901234567" and params["contact3"] == "Bảo vệ +84900000003"
        lang = info.findtext("cap:language", namespaces=NS)
        assert params["facilityTypeName"].startswith("Nhà chung cư" if lang == "vi-VN" else "Apartment building")

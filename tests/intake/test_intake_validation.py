"""Each malformed field is answered 422 with an error that names it; malformed requests 400/415."""

from __future__ import annotations

import copy

import pytest
from intake_harness import call, event_id, valid_report_body


def post_report(server, body, key: str | None = "auto", **kw):
    headers = {} if key is None else {"Idempotency-Key": event_id() if key == "auto" else key}
    return call(server.port, "POST", "/v1/reports", body, headers=headers, **kw)


def edit(path: str, value):
    """A valid body with the dotted `path` set to `value` (or removed when value is REMOVE)."""
    body = copy.deepcopy(valid_report_body())
    *parents, last = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    if value is REMOVE:
        del target[last]
    else:
        target[last] = value
    return body


REMOVE = object()

BAD_FIELDS = [
    ("type", "flood", "type"),
    ("type", REMOVE, "type"),
    ("cause", "laser", "cause"),
    ("event_type", "panic", "event_type"),
    ("event_type", REMOVE, "event_type"),
    ("occurred_at", "2026-11-29 08:30:00", "occurred_at"),
    ("occurred_at", "2026-11-29T15:30:00+07:00", "occurred_at"),
    ("occurred_at", "2026-13-40T08:30:00Z", "occurred_at"),
    ("occurred_at", 1764412345, "occurred_at"),
    ("occurred_at", REMOVE, "occurred_at"),
    ("received_at", "yesterday", "received_at"),
    ("location", REMOVE, "location"),
    ("location", [21.0, 105.8], "location"),
    ("location.lat", 91, "location.lat"),
    ("location.lat", "21.0", "location.lat"),
    ("location.lon", -181, "location.lon"),
    ("location.lon", REMOVE, "location.lon"),
    ("location.accuracy_m", -1, "location.accuracy_m"),
    ("location.source", "wifi", "location.source"),
    ("location.fix_age_s", 1.5, "location.fix_age_s"),
    ("address", "x" * 501, "address"),
    ("building", 12, "building"),
    ("floor", "f" * 65, "floor"),
    ("room", ["301"], "room"),
    ("province", {"name": "HN"}, "province"),
    ("reporter", REMOVE, "reporter"),
    ("reporter.device_id", "", "reporter.device_id"),
    ("reporter.device_id", REMOVE, "reporter.device_id"),
    ("reporter.contact_phone", "0" * 33, "reporter.contact_phone"),
    ("confidence", 1.5, "confidence"),
    ("confidence", True, "confidence"),
    ("reasons", "smoke", "reasons"),
    ("reasons", ["ok", 3], "reasons[1]"),
    ("readings", [1, 2], "readings"),
    ("media", ["https://example.invalid/a.jpg"], "media[0]"),
    ("media", [{"url": "ftp://example.invalid/a.jpg"}], "media[0].url"),
    ("media", [{"url": "https://example.invalid/a.jpg", "kind": "smell"}], "media[0].kind"),
    ("references", 17, "references"),
    ("ward", "w" * 65, "ward"),
    ("ward_code", "163", "ward_code"),
    ("ward_code", 163, "ward_code"),
    ("province_code", "001", "province_code"),
    ("facility", "Toà nhà A", "facility"),
    ("facility.id", REMOVE, "facility.id"),
    ("facility.name", "n" * 121, "facility.name"),
    ("facility.type", "Apartment Building", "facility.type"),
    ("facility.type_name", "Nhà chung cư", "facility.type_name"),
    ("facility.floors_above", 201, "facility.floors_above"),
    ("facility.floors_below", 2.5, "facility.floors_below"),
    ("facility.occupancy_day", -1, "facility.occupancy_day"),
    ("facility.occupancy_night", "450", "facility.occupancy_night"),
    ("facility.hazards", "gas", "facility.hazards"),
    ("facility.hazards", ["gas", "plutonium"], "facility.hazards[1]"),
    ("facility.hazards", ["none", "gas"], "facility.hazards"),
    ("facility.hazards_other", 5, "facility.hazards_other"),
    ("facility.water_sources", ["w" * 201], "facility.water_sources[0]"),
    ("facility.contacts", [{"name": "An"}], "facility.contacts[0].phone"),
    ("facility.contacts", [{"phone": "12ab"}], "facility.contacts[0].phone"),
    ("facility.contacts", [{"phone": "0901234567"}] * 11, "facility.contacts"),
]


@pytest.mark.parametrize("path,value,field", BAD_FIELDS, ids=[f"{p}={'removed' if v is REMOVE else v!r}"[:40]
                                                               for p, v, _ in BAD_FIELDS])
def test_a_bad_field_is_422_naming_it(intake, path, value, field):
    status, _, body = post_report(intake, edit(path, value))
    assert status == 422, body
    assert body["error"] == "invalid_report"
    assert body["field"] == field
    assert field in body["message"]


def test_a_report_without_facility_or_codes_and_a_record_of_unknowns_are_accepted(intake):
    bare = valid_report_body()
    for k in ("facility", "ward", "ward_code", "province_code"):
        del bare[k]
    assert post_report(intake, bare)[0] == 201
    unknown = edit("facility", {"id": "Chợ B", "floors_above": None, "hazards": [], "contacts": []})
    unknown["ward_code"] = unknown["province_code"] = ""  # an address the bridge did not recognise
    assert post_report(intake, unknown)[0] == 201


def test_a_periodic_test_signal_is_a_test_message(intake):
    body = edit("event_type", "test")
    body["cause"] = "periodic"
    status, _, answer = post_report(intake, body)
    assert status == 201 and answer["status"] == "test", answer


def test_cancel_needs_references_and_prealarm_may_not_carry_one(intake):
    body = edit("event_type", "cancel")
    status, _, answer = post_report(intake, body)
    assert status == 422 and answer["field"] == "references"
    body = edit("event_type", "prealarm")
    body["references"] = event_id()
    status, _, answer = post_report(intake, body)
    assert status == 422 and answer["field"] == "references"


def test_every_bad_field_is_listed_at_once(intake):
    body = edit("location.lat", 200)
    body["confidence"] = -0.1
    body["type"] = "flood"
    status, _, answer = post_report(intake, body)
    assert status == 422
    assert {e["field"] for e in answer["errors"]} == {"location.lat", "confidence", "type"}


def test_a_valid_body_is_accepted(intake):
    status, headers, body = post_report(intake, valid_report_body())
    assert status == 201, body
    assert headers["Location"] == f"/v1/incidents/{body['incident_id']}"
    assert body["status"] == "open" and body["received_at"].endswith("Z")


def test_unknown_fields_are_kept_and_ignored(intake):
    body = valid_report_body()
    body["x_vendor"] = {"anything": 1}
    status, _, answer = post_report(intake, body)
    assert status == 201
    _, _, got = call(intake.port, "GET", f"/v1/incidents/{answer['incident_id']}")
    assert got["report"]["x_vendor"] == {"anything": 1}


@pytest.mark.parametrize("key", [None, "", "has space", "k" * 129])
def test_a_missing_or_malformed_idempotency_key_is_400(intake, key):
    status, _, body = post_report(intake, valid_report_body(), key=key)
    assert status == 400 and body["field"] == "Idempotency-Key"


def test_bad_json_is_400_and_a_non_json_body_is_415(intake):
    headers = {"Idempotency-Key": event_id()}
    status, _, body = call(intake.port, "POST", "/v1/reports", raw=b'{"type": "fire",', headers=headers)
    assert status == 400 and body["error"] == "bad_json"
    status, _, body = call(intake.port, "POST", "/v1/reports", raw=b"[1, 2]", headers=headers)
    assert status == 422 and body["field"] == "(body)"
    status, _, body = call(intake.port, "POST", "/v1/reports", raw=b"type=fire",
                           headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415


def test_an_oversized_body_is_413(intake):
    body = valid_report_body()
    body["readings"] = {"hist": "x" * 300_000}
    status, _, answer = post_report(intake, body)
    assert status == 413 and answer["error"] == "too_large"


@pytest.mark.parametrize("change,field", [
    ({"kind": "delete"}, "kind"),
    ({"kind": None}, "kind"),
    ({"occurred_at": "now"}, "occurred_at"),
    ({"reason": 5}, "reason"),
    ({"confidence": 2}, "confidence"),
])
def test_a_bad_update_field_is_422_naming_it(intake, change, field):
    status, _, opened = post_report(intake, valid_report_body())
    assert status == 201
    update = {"kind": "cancel", "reason": "false press", "occurred_at": "2026-11-29T08:31:00Z", **change}
    update = {k: v for k, v in update.items() if v is not None}
    status, _, body = call(intake.port, "POST", f"/v1/incidents/{opened['incident_id']}/updates", update,
                           headers={"Idempotency-Key": event_id()})
    assert status == 422 and body["error"] == "invalid_update" and body["field"] == field


def test_unknown_paths_are_404_and_wrong_methods_405(intake):
    status, _, body = call(intake.port, "GET", "/v2/reports")
    assert status == 404 and body["error"] == "not_found"
    status, headers, body = call(intake.port, "DELETE", "/v1/reports")
    assert status == 405 and headers["Allow"] == "POST"

"""The bridge's JSON sink against the real intake server over loopback HTTP."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from intake_harness import CLIENTS, OTHER_TOKEN, SITE, TOKEN, call, event_id, make_report, valid_report_body

from bridge.report import Facility
from bridge.sinks import build_sink
from bridge.sinks.intake_json import IntakeJsonSink, report_body
from bridge.stages.deliver import DeliveryPolicy, after_send
from stack.intake import Intake
from stack.ports import free_port


def incident(server, incident_id: str, token: str = TOKEN) -> dict:
    status, _, body = call(server.port, "GET", f"/v1/incidents/{incident_id}", token=token)
    assert status == 200, body
    return body


def test_alarm_is_accepted_with_an_incident_id_and_its_details(intake, make_sink):
    sink = make_sink(intake)
    report = make_report()
    outcome = sink.send(report)
    assert outcome.status == "accepted"
    assert outcome.ref and outcome.ref.startswith("114-")
    got = incident(intake, outcome.ref)
    assert got["status"] == "open"
    assert got["event_type"] == "alarm" and got["cause"] == "button" and got["type"] == "fire"
    assert got["device_id"] == "hn-a-0001"
    assert got["address"] == "12 Láng Hạ, Đống Đa, Hà Nội"
    assert (got["building"], got["floor"], got["room"]) == ("Toà nhà A", "3", "301")
    assert got["location"] == {"lat": 21.028511, "lon": 105.804817, "accuracy_m": 15, "source": "fixed",
                               "fix_age_s": 0}
    assert got["report"]["reporter"]["contact_phone"] == "+84 24 3855 0000"
    assert got["report"]["occurred_at"] == "2025-11-29T10:32:25.000Z"
    assert got["confidence"] == 0.95


def test_the_sink_is_built_from_bridge_config(intake):
    sink = build_sink("114", "intake-json", url=intake.url, token=TOKEN, timeout_s=3)
    try:
        assert sink.send(make_report()).status == "accepted"
    finally:
        sink.close()


def test_a_retried_report_gets_the_same_incident_and_no_duplicate(intake, make_sink):
    sink = make_sink(intake)
    report = make_report()
    first = sink.send(report)
    again = make_sink(intake).send(report)  # a new connection, as after a bridge restart
    assert first.status == again.status == "accepted"
    assert again.ref == first.ref
    assert "replay" in again.detail
    _, _, listing = call(intake.port, "GET", "/v1/incidents?limit=1000")
    assert [i["incident_id"] for i in listing["incidents"]].count(first.ref) == 1


def failed_with(outcome) -> str:
    """What the bridge makes of a sink's outcome on a first attempt: the operator's fault reason when
    it is `failed` (bridge/workers/delivery.py raises the `delivery` fault with it), else ""."""
    d = after_send(outcome, 0, 1000.0, 1000.0, DeliveryPolicy(), "intake-test")
    return d.why if d.state == "failed" and d.stage == "failed" else ""


def test_an_event_at_114_sent_again_with_another_body_is_accepted_as_its_incident(intake, make_sink):
    # The site's surveyed location was corrected between two attempts: the same event, another body.
    sink = make_sink(intake)
    report = make_report()
    opened = sink.send(report)
    moved = dataclasses.replace(report, location=dataclasses.replace(report.location, lat=21.0291))
    status, _, answer = call(intake.port, "POST", "/v1/reports", report_body(moved),
                             headers={"Idempotency-Key": report.event_id})
    assert status == 409 and answer["incident_id"] == opened.ref  # what the sink meets
    outcome = sink.send(moved)
    assert outcome.status == "accepted" and outcome.ref == opened.ref and "409" in outcome.detail
    # an update sent again with another body is its incident's too, and nothing is recorded twice
    cancel = make_report(type="cancel", references=report.event_id, incident_id=opened.ref)
    assert sink.send(cancel).ref == opened.ref
    again = sink.send(dataclasses.replace(cancel, readings={"t": 30.5}))
    assert again.status == "accepted" and again.ref == opened.ref and "409" in again.detail
    got = incident(intake, opened.ref)
    assert len(got["updates"]) == 1 and got["location"]["lat"] == report.location.lat


def test_a_conflict_on_an_incident_without_this_event_is_a_failure_with_the_reason(intake, make_sink):
    # Another device under the same event id (a device configured with another's id): the key's incident
    # is this client's, but it holds no event of this device.
    sink = make_sink(intake)
    report = make_report()
    opened = sink.send(report)
    outcome = sink.send(dataclasses.replace(report, device_id="hn-a-0009"))
    assert outcome.status == "refused" and outcome.ref is None
    why = failed_with(outcome)
    assert "409" in why and opened.ref in why and "holds no event" in why and "cannot be matched" in why


def test_a_conflict_naming_another_clients_incident_is_a_failure_with_the_reason(tmp_path, make_sink):
    db = tmp_path / "intake.db"
    with Intake(db, clients=CLIENTS) as server:
        theirs = make_sink(server, token=OTHER_TOKEN).send(make_report())
    # A store in which a key of ours names their incident: how an intake scoping keys wrongly answers.
    ours = make_report()
    con = sqlite3.connect(db)
    with con:
        con.execute("INSERT INTO idempotency (client, key, scope, body_hash, incident_id, response, created_at)"
                    " VALUES ('bridge-a', ?, 'report', 'another body', ?, ?, '2026-11-29T08:30:00Z')",
                    (ours.event_id, theirs.ref, json.dumps({"incident_id": theirs.ref})))
    con.close()
    with Intake(db, clients=CLIENTS) as server:
        outcome = make_sink(server).send(ours)
        assert incident(server, theirs.ref, OTHER_TOKEN)["updates"] == []
    assert outcome.status == "refused" and outcome.ref is None
    why = failed_with(outcome)
    assert "409" in why and theirs.ref in why and "another client" in why


def test_an_update_of_another_clients_incident_is_a_failure_with_the_reason(intake, make_sink):
    alarm = make_report()
    theirs = make_sink(intake, token=OTHER_TOKEN).send(alarm)
    cancel = make_report(type="cancel", references=alarm.event_id, incident_id=theirs.ref)
    outcome = make_sink(intake).send(cancel)
    assert outcome.status == "refused"
    why = failed_with(outcome)
    assert "403" in why and theirs.ref in why and "another client" in why
    assert incident(intake, theirs.ref, OTHER_TOKEN)["status"] == "open"


def test_missing_or_wrong_token_is_refused_with_401(intake, make_sink):
    for token in (None, "wrong"):
        outcome = make_sink(intake, token=token).send(make_report())
        assert outcome.status == "refused"
        assert "401" in outcome.detail
    status, headers, body = call(intake.port, "GET", "/v1/incidents", token=None)
    assert status == 401 and body["error"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_cancel_restore_and_escalation_update_the_incident(intake, make_sink):
    sink = make_sink(intake)
    pre = make_report(type="prealarm", cause="smoke")
    opened = sink.send(pre)
    assert opened.status == "accepted"
    assert incident(intake, opened.ref)["event_type"] == "prealarm"

    alarm = make_report(type="alarm", cause="smoke", references=pre.event_id, incident_key=pre.event_id,
                        incident_id=opened.ref)
    assert sink.send(alarm).ref == opened.ref
    got = incident(intake, opened.ref)
    assert (got["event_type"], got["status"]) == ("alarm", "open")

    cancel = make_report(type="cancel", cause="button", references=alarm.event_id,
                         incident_key=pre.event_id, incident_id=opened.ref, reasons=())
    assert sink.send(cancel).ref == opened.ref
    assert incident(intake, opened.ref)["status"] == "cancelled"

    restore = make_report(type="restore", cause="sensor", references=alarm.event_id,
                          incident_key=pre.event_id, incident_id=opened.ref)
    assert sink.send(restore).ref == opened.ref
    got = incident(intake, opened.ref)
    assert got["status"] == "restored"
    assert [u["kind"] for u in got["updates"]] == ["escalation", "cancel", "restore"]
    assert got["updates"][1]["reason"].startswith("false alarm")
    assert got["updates"][1]["references"] == alarm.event_id


def test_an_update_is_idempotent(intake, make_sink):
    sink = make_sink(intake)
    opened = sink.send(alarm := make_report())
    cancel = make_report(type="cancel", references=alarm.event_id, incident_id=opened.ref)
    assert sink.send(cancel).status == "accepted"
    again = sink.send(cancel)
    assert again.status == "accepted" and again.ref == opened.ref and "replay" in again.detail
    assert len(incident(intake, opened.ref)["updates"]) == 1


def test_an_update_without_incident_id_lands_through_its_reference(intake, make_sink):
    sink = make_sink(intake)
    alarm = make_report()
    opened = sink.send(alarm)
    cancel = make_report(type="cancel", references=alarm.event_id, incident_key=alarm.event_id)
    outcome = sink.send(cancel)
    assert outcome.status == "accepted" and outcome.ref == opened.ref
    assert incident(intake, opened.ref)["status"] == "cancelled"
    # The same update again, now with the incident id known, is the same update (not a conflict).
    known = dataclasses.replace(cancel, incident_id=opened.ref)
    again = sink.send(known)
    assert again.status == "accepted" and again.ref == opened.ref
    assert len(incident(intake, opened.ref)["updates"]) == 1


def test_an_update_whose_original_never_arrived_opens_the_incident(intake, make_sink):
    sink = make_sink(intake)
    cancel = make_report(type="cancel", references=event_id())
    outcome = sink.send(cancel)
    assert outcome.status == "accepted"
    got = incident(intake, outcome.ref)
    assert got["status"] == "cancelled"
    assert [u["kind"] for u in got["updates"]] == ["cancel"]


def test_unknown_incident_is_404_and_the_sink_still_lands_the_update(intake, make_sink):
    body = {"kind": "cancel", "reason": "x", "occurred_at": "2026-11-29T08:30:00Z"}
    status, _, answer = call(intake.port, "POST", "/v1/incidents/114-19990101-999999/updates", body,
                             headers={"Idempotency-Key": event_id()})
    assert status == 404 and answer["error"] == "unknown_incident"

    sink = make_sink(intake)
    alarm = make_report()
    opened = sink.send(alarm)
    stale = make_report(type="cancel", references=alarm.event_id, incident_id="114-19990101-999999")
    outcome = sink.send(stale)
    assert outcome.status == "accepted" and outcome.ref == opened.ref


def test_fault_events_are_not_sent_to_114(intake, make_sink):
    outcome = make_sink(intake).send(make_report(type="fault", cause="battery"))
    assert outcome.status == "refused" and "fault" in outcome.detail


def test_an_unreachable_intake_means_retry(tmp_path):
    sink = IntakeJsonSink("down", f"http://127.0.0.1:{free_port()}", timeout_s=1)
    try:
        outcome = sink.send(make_report())
    finally:
        sink.close()
    assert outcome.status == "retry" and "down" in outcome.detail


def test_incidents_and_idempotency_survive_a_restart(tmp_path, make_sink):
    db = tmp_path / "intake.db"
    alarm = make_report()
    with Intake(db, clients=CLIENTS) as server:
        first = make_sink(server).send(alarm)
    assert first.status == "accepted"
    with Intake(db, clients=CLIENTS) as server:
        sink = make_sink(server)
        again = sink.send(alarm)
        assert again.status == "accepted" and again.ref == first.ref and "replay" in again.detail
        assert incident(server, first.ref)["device_id"] == "hn-a-0001"
        cancel = make_report(type="cancel", references=alarm.event_id)
        assert sink.send(cancel).ref == first.ref
        second = sink.send(make_report())
        assert second.status == "accepted" and second.ref != first.ref
        _, _, listing = call(server.port, "GET", "/v1/incidents")
        assert len(listing["incidents"]) == 2


def test_https_with_a_ca_file(tmp_path, make_sink):
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl command not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    with Intake(tmp_path / "intake.db", clients=CLIENTS, args=("--tls-cert", str(cert), "--tls-key", str(key))) as server:
        assert server.url.startswith("https://")
        accepted = make_sink(server, ca_file=str(cert)).send(make_report())
        assert accepted.status == "accepted" and accepted.ref
        untrusted = make_sink(server).send(make_report())
        assert untrusted.status == "retry" and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail


def test_rounding_and_a_missing_cause_do_not_lose_an_alarm_or_a_cancel(intake, make_sink):
    sink = make_sink(intake)
    alarm = make_report(confidence=1.0000001)
    opened = sink.send(alarm)
    assert opened.status == "accepted"
    assert incident(intake, opened.ref)["confidence"] == 1.0
    cancel = make_report(type="cancel", cause="", references=alarm.event_id)
    assert sink.send(cancel).ref == opened.ref


def test_a_bad_url_is_a_configuration_error():
    for url in ("ftp://127.0.0.1/", "127.0.0.1:8114", "http:///v1"):
        with pytest.raises(ValueError):
            IntakeJsonSink("bad", url)


def test_simultaneous_retries_of_one_report_make_one_incident(intake):
    key = event_id()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda _: call(intake.port, "POST", "/v1/reports", valid_report_body(), headers={"Idempotency-Key": key}),
            range(8),
        ))
    assert sorted(status for status, _, _ in answers) == [200] * 7 + [201]
    assert len({body["incident_id"] for _, _, body in answers}) == 1


def test_a_retry_with_a_revised_assessment_is_the_same_event(intake, make_sink):
    # The bridge re-assesses before each attempt: a cancel that arrived meanwhile lowers the confidence.
    sink = make_sink(intake)
    first = make_report(confidence=0.95)
    opened = sink.send(first)
    revised = dataclasses.replace(first, confidence=0.3, reasons=("cancelled 5 s later",),
                                  site=dataclasses.replace(first.site, contact_phone="+84 90 000 0000"))
    again = sink.send(revised)
    assert again.status == "accepted" and again.ref == opened.ref and "replay" in again.detail


def test_a_late_report_reaches_the_intake_saying_why(intake, make_sink):
    sink = make_sink(intake)
    why = "counter 4 arrived after 11: sent again late, or overtaken"
    outcome = sink.send(make_report(late=why))
    assert outcome.status == "accepted"
    assert incident(intake, outcome.ref)["report"]["late"] == why
    assert "late" not in incident(intake, sink.send(make_report()).ref)["report"]
    body = dict(valid_report_body(), late="x" * 501)
    status, _, answer = call(intake.port, "POST", "/v1/reports", body, headers={"Idempotency-Key": event_id()})
    assert status == 422 and any(e["field"] == "late" for e in answer["errors"]), answer


def test_a_self_test_is_a_test_message_at_114_not_an_incident(intake, make_sink):
    sink = make_sink(intake)
    before = len(call(intake.port, "GET", "/v1/incidents?limit=1000")[2]["incidents"])
    test = make_report(type="test", cause="selftest", readings={"pass": True}, reasons=())
    out = sink.send(test)
    assert out.status == "accepted" and out.ref.startswith("114-test-")
    again = make_sink(intake).send(test)  # a retry after a restart: the same test, not a second one
    assert again.status == "accepted" and again.ref == out.ref and "replay" in again.detail
    assert len(call(intake.port, "GET", "/v1/incidents?limit=1000")[2]["incidents"]) == before
    status, headers, listing = call(intake.port, "GET", "/v1/tests?limit=10")
    assert status == 200
    [t] = [t for t in listing["tests"] if t["test_id"] == out.ref]
    assert t["device_id"] == "hn-a-0001" and t["cause"] == "selftest" and t["readings"] == {"pass": True}


def test_the_periodic_test_signal_is_a_test_message_at_114(intake, make_sink):
    out = make_sink(intake).send(make_report(type="test", cause="periodic", readings={}, reasons=()))
    assert out.status == "accepted" and out.ref.startswith("114-test-"), out
    [t] = [t for t in call(intake.port, "GET", "/v1/tests?limit=20")[2]["tests"] if t["test_id"] == out.ref]
    assert t["cause"] == "periodic"


def test_an_alarm_carries_the_facility_record_and_the_unit_codes(intake, make_sink):
    site = dataclasses.replace(SITE, ward="Phường Láng", ward_code="00163", province_code="01")
    facility = Facility(id="Toà nhà A", name="Toà nhà A", type="office", floors_above=9, occupancy_night=0,
                        hazards=("none",), contacts=(("An", "0901234567"),))
    out = make_sink(intake).send(make_report(site=site, facility=facility))
    assert out.status == "accepted", out
    got = call(intake.port, "GET", f"/v1/incidents/{out.ref}")[2]
    assert (got["ward"], got["ward_code"], got["province_code"]) == ("Phường Láng", "00163", "01")
    f = got["facility"]
    assert (f["type"], f["type_name"]["en"], f["floors_above"], f["floors_below"]) == (
        "office", "Offices, seat of an agency", 9, None)
    assert (f["occupancy_night"], f["hazards"], f["contacts"]) == (0, ["none"], [{"name": "An", "phone": "0901234567"}])

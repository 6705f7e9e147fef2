"""Fault injection (set at run time through /admin/mode, or at start by flag) as the sink sees it."""

from __future__ import annotations

from intake_harness import CLIENTS, call, make_report

from stack.intake import Intake


def count(server) -> int:
    _, _, health = call(server.port, "GET", "/healthz", token=None)
    return health["incidents"]


def test_fail_mode_means_retry_then_the_same_report_is_accepted(fresh_intake, make_sink):
    sink = make_sink(fresh_intake)
    fresh_intake.set_mode("fail")
    report = make_report()
    outcome = sink.send(report)
    assert outcome.status == "retry" and "503" in outcome.detail
    fresh_intake.set_mode("normal")
    assert sink.send(report).status == "accepted"
    assert count(fresh_intake) == 1


def test_stall_means_retry_after_the_sink_timeout_and_nothing_is_created(fresh_intake, make_sink):
    sink = make_sink(fresh_intake, timeout_s=0.5)
    fresh_intake.set_mode("stall")
    report = make_report()
    outcome = sink.send(report)
    assert outcome.status == "retry" and "no answer within 0.5 s" in outcome.detail
    # The page and health stay up while the API stalls, so an operator can see why.
    status, _, health = call(fresh_intake.port, "GET", "/healthz", token=None)
    assert status == 200 and health["mode"] == "stall"
    fresh_intake.set_mode("normal")
    assert count(fresh_intake) == 0  # the stalled request was lost, not half-processed
    accepted = sink.send(report)
    assert accepted.status == "accepted" and "replay" not in accepted.detail


def test_slow_mode_answers_late_within_the_timeout_and_times_out_beyond_it(fresh_intake, make_sink):
    fresh_intake.set_mode("slow", delay_s=0.3)
    patient = make_sink(fresh_intake, timeout_s=5)
    assert patient.send(make_report()).status == "accepted"
    fresh_intake.set_mode("slow", delay_s=3)
    hasty = make_sink(fresh_intake, timeout_s=0.5)
    report = make_report()
    assert hasty.send(report).status == "retry"
    fresh_intake.set_mode("normal")
    # The slow request finished on the server after the client gave up; the retry finds it.
    again = hasty.send(report)
    assert again.status == "accepted"


def test_a_lost_answer_is_recovered_by_the_retry_with_the_same_incident(fresh_intake, make_sink):
    sink = make_sink(fresh_intake)
    fresh_intake.set_mode("drop")
    report = make_report()
    assert sink.send(report).status == "retry"
    assert count(fresh_intake) == 1  # the intake did process it
    fresh_intake.set_mode("normal")
    again = sink.send(report)
    assert again.status == "accepted" and "replay" in again.detail
    _, _, listing = call(fresh_intake.port, "GET", "/v1/incidents")
    assert [i["incident_id"] for i in listing["incidents"]] == [again.ref]


def test_the_mode_can_be_set_by_flag_at_start(tmp_path, make_sink):
    with Intake(tmp_path / "intake.db", clients=CLIENTS, args=("--mode", "fail")) as server:
        status, headers, body = call(server.port, "POST", "/v1/reports", {}, headers={"Idempotency-Key": "k"})
        assert status == 503 and body["error"] == "unavailable" and headers["Retry-After"] == "1"
        status, _, mode = call(server.port, "GET", "/admin/mode", token=None)
        assert status == 200 and mode["mode"] == "fail"


def test_admin_rejects_an_unknown_mode_and_a_bad_delay(intake):
    status, _, body = call(intake.port, "POST", "/admin/mode", {"mode": "explode"}, token=None)
    assert status == 422 and body["field"] == "mode"
    status, _, body = call(intake.port, "POST", "/admin/mode", {"mode": "slow", "delay_s": -1}, token=None)
    assert status == 422 and body["field"] == "delay_s"
    _, _, mode = call(intake.port, "GET", "/admin/mode", token=None)
    assert mode["mode"] == "normal"

"""What the JSON sink passes on from an intake's answer is bounded: the incident id goes into the
device's ack and onto the operator's screen, so one the sink cannot pass on is a sink error, not an ack.
An intake on a loopback port answers as the test tells it."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sink_helpers import make_report

from bridge.sinks.intake_json import IntakeJsonSink


@pytest.fixture
def answering():
    """POSTs are answered answer["status"] and answer["body"], GETs answer["get"] (status, body);
    answer["seen"] lists each request as (method, path)."""
    answer = {"status": 201, "body": {}, "get": (404, {"error": "unknown_incident"}), "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status, body):
            answer["seen"].append((self.command, self.path))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802  (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer(answer["status"], answer["body"])

        def do_GET(self):  # noqa: N802
            self._answer(*answer["get"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # a quick shutdown
    try:
        yield answer, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("incident", ["114-" + "9" * 61, "114 HN 1", "", None, 42, "114-\u0111"])
def test_an_incident_id_that_cannot_be_passed_on_is_a_sink_error(answering, incident):
    answer, url = answering
    answer["body"] = {"incident_id": incident}
    sink = IntakeJsonSink("114", url)
    try:
        out = sink.send(make_report())
    finally:
        sink.close()
    assert out.status == "refused" and "incident id that cannot be passed on" in out.detail and out.ref is None


def test_a_usable_incident_id_is_accepted(answering):
    answer, url = answering
    answer["body"] = {"incident_id": "114-" + "9" * 60}  # 64 characters: the limit
    sink = IntakeJsonSink("114", url)
    try:
        out = sink.send(make_report())
    finally:
        sink.close()
    assert out.status == "accepted" and out.ref == "114-" + "9" * 60


CONFLICT = {"error": "idempotency_conflict", "message": "Idempotency-Key was already used with a different body",
            "incident_id": "114-20261129-000042"}


def held(client: str = "bridge-a", **changes) -> dict:
    """The intake's incident 114-20261129-000042, opened by make_report()'s event."""
    report = make_report()
    return dict({"incident_id": CONFLICT["incident_id"], "client": client, "idempotency_key": report.event_id,
                 "device_id": report.device_id, "updates": []}, **changes)


def send(url: str, **options):
    sink = IntakeJsonSink("114", url, **options)
    try:
        return sink.send(make_report())
    finally:
        sink.close()


def test_a_409_whose_incident_holds_this_event_is_accepted_as_that_incident(answering):
    answer, url = answering
    answer.update(status=409, body=CONFLICT, get=(200, held()))
    out = send(url, client="bridge-a")
    assert out.status == "accepted" and out.ref == CONFLICT["incident_id"]
    assert answer["seen"][-1] == ("GET", "/v1/incidents/114-20261129-000042")


def test_a_409_whose_incident_is_another_clients_is_refused_saying_so(answering):
    answer, url = answering
    answer.update(status=409, body=CONFLICT, get=(200, held(client="bridge-b")))  # an intake showing all
    out = send(url, client="bridge-a")
    assert out.status == "refused" and "another client" in out.detail and CONFLICT["incident_id"] in out.detail
    answer.update(get=(403, {"error": "not_your_incident", "message": "another client's"}))
    out = send(url)
    assert out.status == "refused" and "another client" in out.detail


@pytest.mark.parametrize("got, says", [
    ((404, {"error": "unknown_incident", "message": "no incident"}), "could not be fetched: HTTP 404: no incident"),
    ((200, held(incident_id="114-20261129-000043")), "cannot be matched"),
    ((200, held(idempotency_key="hn-a-0001-00000099")), "cannot be matched"),
    ((200, held(device_id="hn-a-0002")), "cannot be matched"),
    ((200, {"updates": "none"}), "cannot be matched"),
])
def test_a_409_whose_incident_cannot_be_matched_is_refused_saying_why(answering, got, says):
    answer, url = answering
    answer.update(status=409, body=CONFLICT, get=got)
    out = send(url)
    assert out.status == "refused" and "409" in out.detail and says in out.detail, out.detail


def test_a_409_matched_through_an_update_is_accepted(answering):
    answer, url = answering
    key = make_report().event_id
    update = {"update_id": "u1", "idempotency_key": key, "body": {"reporter": {"device_id": "hn-a-0001"}}}
    answer.update(status=409, body=CONFLICT, get=(200, held(idempotency_key="other", updates=[update])))
    assert send(url).status == "accepted"


@pytest.mark.parametrize("body, says", [
    ({"error": "idempotency_conflict", "message": "m", "test_id": "114-test-20261129-000001"}, "as a test message"),
    ({"error": "idempotency_conflict", "message": "m"}, "names no incident"),
    (dict(CONFLICT, incident_id="114 HN/1"), "cannot be passed on"),
])
def test_a_409_naming_no_usable_incident_is_refused_without_fetching(answering, body, says):
    answer, url = answering
    answer.update(status=409, body=body)
    out = send(url)
    assert out.status == "refused" and says in out.detail
    assert [m for m, _ in answer["seen"]] == ["POST"]


def test_a_409_whose_incident_cannot_be_fetched_now_is_retried(answering):
    answer, url = answering
    answer.update(status=409, body=CONFLICT, get=(503, {"error": "unavailable", "message": "later"}))
    out = send(url)
    assert out.status == "retry" and "could not be fetched" in out.detail

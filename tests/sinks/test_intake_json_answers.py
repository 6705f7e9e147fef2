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
    answer = {"status": 201, "body": {}}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            data = json.dumps(answer["body"]).encode()
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
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

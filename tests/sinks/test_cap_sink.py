"""CapSink delivery: HTTP POST to a command centre's endpoint, or a spool directory."""

import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cap_check import check
from sink_helpers import ServedInThread, follow_up, make_report

from bridge.sinks import build_sink
from bridge.sinks.cap import CapSink
from stack.ports import free_port


class Endpoint(ServedInThread):
    """A loopback HTTP endpoint answering every POST with `status` (after `delay` seconds)."""

    def __init__(self, status=201, delay=0.0):
        self.status, self.delay, self.posts = status, delay, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((self.headers["Content-Type"], body))
                time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cap"
        self._serve()



@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_accepted_with_the_identifier_as_ref(status):
    with Endpoint(status) as ep:
        outcome = build_sink("pcc", "cap", url=ep.url).send(make_report())
    assert outcome.status == "accepted"
    assert outcome.ref == "baochay-edge.hn-a-0001-00000017"
    content_type, body = ep.posts[0]
    assert content_type == "application/cap+xml"
    check(body)


@pytest.mark.parametrize(
    "status,want", [(500, "retry"), (503, "retry"), (429, "retry"), (400, "refused"), (403, "refused")]
)
def test_error_statuses(status, want):
    with Endpoint(status) as ep:
        assert CapSink("pcc", url=ep.url).send(make_report()).status == want


def test_timeout_is_a_retry():
    with Endpoint(delay=1.5) as ep:
        outcome = CapSink("pcc", url=ep.url, timeout_s=0.3).send(make_report())
    assert outcome.status == "retry"


def test_nobody_listening_is_a_retry():
    outcome = CapSink("pcc", url=f"http://127.0.0.1:{free_port()}/cap", timeout_s=1).send(make_report())
    assert outcome.status == "retry"


def test_a_retried_report_posts_the_same_bytes():
    with Endpoint() as ep:
        sink = CapSink("pcc", url=ep.url)
        sink.send(make_report())
        sink.send(make_report())
    assert ep.posts[0] == ep.posts[1]


def test_spool_writes_one_file_per_identifier_and_is_idempotent(tmp_path):
    spool = tmp_path / "cap-out"
    sink = CapSink("pcc", spool_dir=str(spool))
    first = sink.send(make_report())
    again = sink.send(make_report())
    cancel = sink.send(follow_up(make_report(), 1, "cancel", "button"))
    assert first.status == again.status == cancel.status == "accepted"
    names = sorted(p.name for p in spool.iterdir())
    assert names == [f"{first.ref}.xml", f"{cancel.ref}.xml"]  # no temporary file left behind
    for name in names:
        check((spool / name).read_bytes())


def test_spool_that_cannot_be_written_is_a_retry(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    assert CapSink("pcc", spool_dir=str(blocker / "spool")).send(make_report()).status == "retry"


def test_references_survive_a_restart_with_state_path(tmp_path):
    state = str(tmp_path / "cap.sent")
    with Endpoint() as ep:
        CapSink("pcc", url=ep.url, state_path=state).send(make_report())
        restarted = CapSink("pcc", url=ep.url, state_path=state)
        restarted.send(follow_up(make_report(), 1, "cancel", "button"))
    root = check(ep.posts[1][1])
    assert root.findtext("{urn:oasis:names:tc:emergency:cap:1.2}note") is None  # the time was known


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"url": "http://127.0.0.1:1/x", "spool_dir": "/tmp/x"},
        {"url": "http://127.0.0.1:1/x", "sender": "a b"},
    ],
)
def test_bad_options_are_refused_at_build_time(options):
    with pytest.raises(ValueError):
        build_sink("pcc", "cap", **options)

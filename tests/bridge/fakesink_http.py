"""A stand-in 114 intake for the bridge tests: an HTTP server in the test, and the sink that posts to it.

The bridge subprocess loads `HttpTestSink` through its `sink_types` config key. The server is
idempotent by event id like a real intake (the same event gets the same incident id), records every
post, and can be switched to answer 503 (down: the sink says retry) or 422 (refuse).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bridge.report import Outcome, Report


class HttpTestSink:
    def __init__(self, name: str, url: str, timeout: float = 2.0):
        self.name = name
        self.url = url
        self.timeout = timeout

    def send(self, report: Report) -> Outcome:
        body = json.dumps({
            "event_id": report.event_id, "device_id": report.device_id, "type": report.type,
            "cause": report.cause, "incident_key": report.incident_key, "references": report.references,
            "incident_id": report.incident_id, "confidence": report.confidence, "reasons": list(report.reasons),
            "building": report.site.building, "lat": report.location.lat, "lon": report.location.lon,
            "loc_source": report.location.source, "late": report.late,
        }).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return Outcome.accepted(json.loads(r.read())["incident"])
        except urllib.error.HTTPError as e:
            if e.code == 422:
                return Outcome.refused(f"HTTP {e.code}")
            return Outcome.retry(f"HTTP {e.code}")
        except OSError as e:
            return Outcome.retry(str(e))

    def close(self) -> None:
        pass


class FakeIntake:
    def __init__(self):
        self.mode = "up"  # up | down | refuse
        self.posts: list[dict] = []
        self.incidents: dict[str, str] = {}  # event id -> incident id
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                report = json.loads(self.rfile.read(n))
                with outer.lock:
                    outer.posts.append(report)
                    mode = outer.mode
                    if mode == "up":
                        eid = report["event_id"]
                        inc = outer.incidents.setdefault(eid, report.get("incident_id")
                                                         or f"INC-{len(outer.incidents) + 1:05d}")
                if mode == "down":
                    self.send_response(503)
                    self.end_headers()
                    return
                if mode == "refuse":
                    self.send_response(422)
                    self.end_headers()
                    return
                out = json.dumps({"incident": inc}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/reports"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return list(self.incidents)

    def posts_for(self, eid: str) -> list[dict]:
        with self.lock:
            return [p for p in self.posts if p["event_id"] == eid]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

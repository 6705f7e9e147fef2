"""The 114 intake reference server: the API of docs/intake-api.md over HTTP(S), on the standard library.

    python -m intake.server --port 0 --db var/intake.db --tokens var/intake.tokens

Its first line on stdout is `listening on http://HOST:PORT`, so whoever started it can find the port.
Every /v1 call names its client by a bearer token from the tokens file (intake/clients.py), and sees
and changes only that client's incidents.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import signal
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import clients, page, schema
from .faults import MODES, FaultMode
from .store import Conflict, NotFound, NotYours, Store, now_rfc3339

MAX_BODY = 256 * 1024
INCIDENT_ID_RE = r"[A-Za-z0-9._-]{1,64}"

# (method, path template) pairs this server answers; docs/intake-openapi.yaml must list the same.
ROUTES = (
    ("GET", "/"),
    ("GET", "/healthz"),
    ("POST", "/v1/reports"),
    ("GET", "/v1/incidents"),
    ("GET", "/v1/tests"),
    ("GET", "/v1/incidents/{incident_id}"),
    ("POST", "/v1/incidents/{incident_id}/updates"),
    ("GET", "/admin/mode"),
    ("POST", "/admin/mode"),
)


def _route_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\{[a-z_]+\}", f"({INCIDENT_ID_RE})", template) + "$")


_ROUTE_RES = [(m, t, _route_regex(t)) for m, t in ROUTES]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": code, "message": message, **extra}


class _Dropped(Exception):
    """Close the connection without answering (stall released, or `drop` mode)."""


class IntakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, store: Store, faults: FaultMode, known: clients.Clients,
                 tls: ssl.SSLContext | None = None, quiet: bool = False) -> None:
        self.store = store
        self.faults = faults
        self.clients = known
        self.tls = tls
        self.quiet = quiet
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address) -> None:
        # The TLS handshake runs here, in the request's own thread, so a slow client cannot block accept().
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                request.close()
                return
        super().finish_request(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "baochay-intake/0.1"
    timeout = 60  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # small answers go out at once, not after the peer's delayed ACK
    server: IntakeServer
    client = ""  # who is calling, once /v1 checked the token

    # -- plumbing ----------------------------------------------------------------------------------

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "length_required", "send the body with a Content-Length header")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            if 0 < n <= 4 * MAX_BODY:
                self.rfile.read(n)  # drain it, so the client reads our answer instead of a reset
            raise ApiError(413, "too_large", f"the body must be at most {MAX_BODY} bytes")
        return self.rfile.read(n)

    def _parse_json(self, raw: bytes) -> object:
        ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as application/json")
        if not raw:
            raise ApiError(400, "bad_json", "the body is empty; send a JSON object")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {e}") from None

    def _check_token(self) -> None:
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        client = self.server.clients.who(value.strip()) if scheme.lower() == "bearer" else None
        if client is None:
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header is required")
        self.client = client

    def _not_yours(self, incident_id: str) -> ApiError:
        return ApiError(403, "not_your_incident",
                        f"incident {incident_id!r} was reported by another client; only the client that "
                        "reported an incident can read or update it", incident_id=incident_id)

    def _apply_fault(self) -> None:
        faults = self.server.faults
        mode = faults.snapshot()
        if mode["mode"] == "fail":
            raise ApiError(503, "unavailable", "the intake is failing on purpose (fault mode 'fail')")
        if mode["mode"] == "stall":
            faults.stall()
            raise _Dropped()
        if mode["mode"] == "slow" and not faults.sleep(mode["delay_s"]):
            raise _Dropped()  # the server is closing

    def _is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.client_address[0]).is_loopback
        except ValueError:
            return False

    # -- dispatch ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.client = ""  # a keep-alive connection's earlier request vouches for nothing now
        try:
            raw = self._read_body()
            allowed, target = [], None
            for m, template, rx in _ROUTE_RES:
                match = rx.match(url.path)
                if match:
                    allowed.append(m)
                    if m == method:
                        target = (template, match.groups())
            if target is None:
                if allowed:
                    raise ApiError(405, "method_not_allowed", f"use {', '.join(allowed)} on {url.path}",
                                   allow=allowed)
                raise ApiError(404, "not_found", f"no such path: {url.path}")
            template, args = target
            if template.startswith("/v1/"):
                self._apply_fault()
                self._check_token()
            getattr(self, HANDLERS[(method, template)])(*args, query=parse_qs(url.query), raw=raw)
        except ApiError as e:
            headers = {"Allow": ", ".join(e.body["allow"])} if "allow" in e.body else {}
            if e.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="114 intake"'
            if e.status == 503:
                headers["Retry-After"] = "1"
            try:
                self._json(e.status, e.body, headers)
            except OSError:
                self.close_connection = True  # the client went away; nothing to tell it
        except (_Dropped, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug here must still answer, and the server must keep serving
            self.log_error("internal error: %r", e)
            self.close_connection = True
            try:
                self._json(500, {"error": "internal", "message": "internal error"})
            except OSError:
                pass

    def _answer_write(self, created: bool, response: dict) -> None:
        if self.server.faults.snapshot()["mode"] == "drop":
            raise _Dropped()
        headers = {"Location": f"/v1/incidents/{response['incident_id']}"} if "incident_id" in response else {}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        self._json(201 if created else 200, response, headers)

    # -- endpoints ---------------------------------------------------------------------------------

    def page(self, query, raw) -> None:
        html = page.render(self.server.store.list_incidents(200), self.server.faults.snapshot())
        self._send(200, html.encode(), "text/html; charset=utf-8")

    def healthz(self, query, raw) -> None:
        self._json(200, {"ok": True, "time": now_rfc3339(), "incidents": self.server.store.count(),
                         **self.server.faults.snapshot()})

    def _idempotency_key(self) -> str:
        try:
            return schema.check_key(self.headers.get("Idempotency-Key"))
        except schema.Invalid as e:
            raise ApiError(400, "missing_idempotency_key", str(e), field="Idempotency-Key", errors=e.errors) from None

    def post_report(self, query, raw) -> None:
        body = self._parse_json(raw)
        key = self._idempotency_key()
        try:
            report = schema.check_report(body)
        except schema.Invalid as e:
            raise ApiError(422, "invalid_report", str(e), field=e.errors[0]["field"], errors=e.errors) from None
        try:
            created, response = self.server.store.submit_report(self.client, key, report)
        except Conflict as e:
            raise self._conflict(e, "a different body") from None
        self._answer_write(created, response)

    @staticmethod
    def _conflict(e: Conflict, what: str) -> ApiError:
        # The key's first use names what it made, so the client can fetch it and judge (an incident),
        # or know there is nothing to fetch (a test message).
        named = {"test_id": e.incident_id} if e.test else {"incident_id": e.incident_id}
        return ApiError(409, "idempotency_conflict", f"Idempotency-Key {e.key!r} was already used with {what}",
                        **named)

    def post_update(self, incident_id: str, query, raw) -> None:
        body = self._parse_json(raw)
        key = self._idempotency_key()
        try:
            update = schema.check_update(body)
        except schema.Invalid as e:
            raise ApiError(422, "invalid_update", str(e), field=e.errors[0]["field"], errors=e.errors) from None
        try:
            created, response = self.server.store.submit_update(self.client, key, incident_id, update)
        except NotFound:
            raise ApiError(404, "unknown_incident", f"no incident {incident_id!r}") from None
        except NotYours:
            raise self._not_yours(incident_id) from None
        except Conflict as e:
            raise self._conflict(e, "a different body or incident") from None
        self._answer_write(created, response)

    @staticmethod
    def _limit(query) -> int:
        try:
            limit = int(query.get("limit", ["100"])[0])
            if not 1 <= limit <= 1000:
                raise ValueError
        except ValueError:
            raise ApiError(400, "bad_query", "limit must be an integer from 1 to 1000", field="limit") from None
        return limit

    def list_incidents(self, query, raw) -> None:
        self._json(200, {"incidents": self.server.store.list_incidents(self._limit(query), self.client)})

    def list_tests(self, query, raw) -> None:
        self._json(200, {"tests": self.server.store.list_tests(self._limit(query), self.client)})

    def get_incident(self, incident_id: str, query, raw) -> None:
        incident = self.server.store.get_incident(incident_id)
        if incident is None:
            raise ApiError(404, "unknown_incident", f"no incident {incident_id!r}")
        if incident["client"] != self.client:
            raise self._not_yours(incident_id)
        self._json(200, incident)

    def get_mode(self, query, raw) -> None:
        self._admin_only()
        self._json(200, self.server.faults.snapshot())

    def set_mode(self, query, raw) -> None:
        self._admin_only()
        body = self._parse_json(raw)
        if not isinstance(body, dict) or body.get("mode") not in MODES:
            raise ApiError(422, "invalid_mode", f"mode must be one of {', '.join(MODES)}", field="mode")
        try:
            self.server.faults.set(body["mode"], body.get("delay_s"))
        except ValueError as e:
            raise ApiError(422, "invalid_mode", str(e), field="delay_s") from None
        self._json(200, self.server.faults.snapshot())

    def _admin_only(self) -> None:
        if not self._is_loopback():
            raise ApiError(403, "forbidden", "the admin endpoint answers loopback clients only")


HANDLERS = {
    ("GET", "/"): "page",
    ("GET", "/healthz"): "healthz",
    ("POST", "/v1/reports"): "post_report",
    ("GET", "/v1/incidents"): "list_incidents",
    ("GET", "/v1/tests"): "list_tests",
    ("GET", "/v1/incidents/{incident_id}"): "get_incident",
    ("POST", "/v1/incidents/{incident_id}/updates"): "post_update",
    ("GET", "/admin/mode"): "get_mode",
    ("POST", "/admin/mode"): "set_mode",
}


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="baochay-intake", description="114 intake reference server")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8114, help="TCP port; 0 picks a free one (default 8114)")
    ap.add_argument("--db", default=os.path.join("var", "intake.db"),
                    help="SQLite file for incidents and idempotency keys (default var/intake.db)")
    ap.add_argument("--tokens", metavar="FILE", default=os.environ.get("BAOCHAY_INTAKE_TOKENS") or None,
                    help="the clients: one 'client_id token' line each, mode 0600; every /v1 call needs "
                         "'Authorization: Bearer TOKEN' (default: $BAOCHAY_INTAKE_TOKENS)")
    ap.add_argument("--mode", choices=MODES, default="normal", help="fault mode at start (default normal)")
    ap.add_argument("--delay", type=float, default=2.0, help="delay in seconds for --mode slow (default 2)")
    ap.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS")
    ap.add_argument("--tls-key", help="PEM private key for --tls-cert")
    ap.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    return args


def _clients(path: str | None) -> clients.Clients:
    if not path:
        raise clients.TokensError("no tokens file: give --tokens FILE (or set BAOCHAY_INTAKE_TOKENS), "
                                  "one 'client_id token' line per client")
    return clients.load(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        known = _clients(args.tokens)
    except clients.TokensError as e:
        print(f"baochay-intake: error: {e}", file=sys.stderr, flush=True)
        return 2
    if args.db != ":memory:":
        parent = os.path.dirname(args.db)
        if parent:
            os.makedirs(parent, exist_ok=True)
    store = Store(args.db)
    faults = FaultMode(args.mode, args.delay)
    tls = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    httpd = IntakeServer((args.host, args.port), store, faults, known, tls, args.quiet)
    host, port = httpd.socket.getsockname()[:2]  # a str host; server_address is typed str | bytes
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in str(host) else host
    print(f"listening on {scheme}://{shown}:{port}", flush=True)

    def stop(signum, frame) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        faults.close()
        httpd.server_close()
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

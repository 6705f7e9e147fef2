"""Sink into the 114 intake's JSON API (docs/intake-api.md).

Which call a Report becomes:
  alarm, prealarm, test (no `references`)          POST /v1/reports
  cancel, restore, or an alarm escalating a prealarm:
    incident id known                              POST /v1/incidents/{id}/updates
    incident id not known yet                      POST /v1/reports with `references` = original event id
  The intake resolves `references` through the original report's Idempotency-Key and, should it never
  have seen that report, opens the incident from the update's own body: an update always lands. An
  updates call answered 404 (the intake lost the incident) falls back to the `references` form.
  fault                                            not a 114 matter: refused without a call

Idempotency-Key is always the device's event id, so every retry (after a timeout, a crash, a restart)
is answered with the incident the first attempt created.

A `409` says the key was used before with another body (the site record changed between two attempts,
say). The sink then fetches the incident the 409 names: when it holds this very event (this key, this
device) and is this client's, the event is at 114 and the answer is `accepted` with that incident;
anything else (another client's incident, one that holds no such event, none named) is `refused` with
the reason, which the bridge shows the operator as a delivery fault.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from firmware.protocol_host import MAX_INCIDENT, valid_incident

from ..facility_types import FACILITY_TYPES
from ..report import Facility, Outcome, Report

UPDATE_KIND = {"cancel": "cancel", "restore": "restore", "alarm": "escalation"}
DEFAULT_REASON = {
    "cancel": "false alarm: cancelled at the device by the occupant",
    "restore": "the condition cleared at the device",
    "escalation": "pre-alarm confirmed as an alarm",
}
RETRY_STATUSES = (408, 425, 429)  # client-side codes that mean "later", not "never"
# A reused keep-alive connection the server already closed fails like this before any answer.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unit(x: float) -> float:
    # The intake refuses a confidence outside 0..1; rounding upstream must not lose an alarm.
    return min(1.0, max(0.0, float(x)))


def _reporter(report: Report) -> dict:
    return {"device_id": report.device_id, "board": report.board, "contact_phone": report.site.contact_phone}


def facility_body(f: Facility) -> dict:
    """The report's `facility` object (docs/intake-api.md): the record as the operator wrote it, the
    type's names beside its code so a receiver needs no copy of the list."""
    names = FACILITY_TYPES.get(f.type)
    return {
        "id": f.id,
        "name": f.name,
        "type": f.type,
        "type_name": {"vi": names[0], "en": names[1]} if names else None,
        "floors_above": f.floors_above,
        "floors_below": f.floors_below,
        "occupancy_day": f.occupancy_day,
        "occupancy_night": f.occupancy_night,
        "hazards": list(f.hazards),
        "hazards_other": f.hazards_other,
        "water_sources": list(f.water_sources),
        "contacts": [{"name": n, "phone": p} for n, p in f.contacts],
    }


def report_body(report: Report, incident_type: str = "fire", with_references: bool = False) -> dict:
    """The POST /v1/reports body for a report."""
    loc, site = report.location, report.site
    body = {
        "type": incident_type,
        # A cancel or restore may come without a cause; the intake wants a word there.
        "cause": report.cause or "unspecified",
        "event_type": report.type,
        "occurred_at": rfc3339(report.occurred_at),
        "received_at": rfc3339(report.received_at),
        "location": {
            "lat": loc.lat,
            "lon": loc.lon,
            "accuracy_m": loc.accuracy_m,
            "source": loc.source,
            "fix_age_s": int(loc.fix_age_s),
        },
        "address": site.address,
        "building": site.building,
        "floor": site.floor,
        "room": site.room,
        "province": site.province,
        # the 2025 units' official codes 114 routes by; '' when the address was not recognised
        "ward": site.ward,
        "ward_code": site.ward_code,
        "province_code": site.province_code,
        "reporter": _reporter(report),
        "confidence": _unit(report.confidence),
        "reasons": list(report.reasons),
        "readings": dict(report.readings),
        "media": [],
    }
    if report.facility is not None:
        body["facility"] = facility_body(report.facility)
    if with_references:
        body["references"] = report.references
    if report.late:
        body["late"] = report.late
    return body


def update_body(report: Report) -> dict:
    """The POST /v1/incidents/{id}/updates body for a cancel, restore or escalation."""
    kind = UPDATE_KIND[report.type]
    body = {
        "kind": kind,
        "reason": "; ".join(report.reasons) or DEFAULT_REASON[kind],
        "occurred_at": rfc3339(report.occurred_at),
        "received_at": rfc3339(report.received_at),
        "cause": report.cause or "unspecified",
        "references": report.references,
        "reporter": _reporter(report),
        "confidence": _unit(report.confidence),
        "readings": dict(report.readings),
    }
    if report.late:
        body["late"] = report.late
    return body


def _holds(incident: dict, key: str, device_id: str) -> bool:
    """Whether the intake's incident holds the event `key` of `device_id`: as the report that opened
    it, or as one of its updates."""
    if incident.get("idempotency_key") == key and incident.get("device_id") == device_id:
        return True
    updates = incident.get("updates")
    for u in updates if isinstance(updates, list) else ():
        if isinstance(u, dict) and u.get("idempotency_key") == key:
            body = u.get("body")
            reporter = body.get("reporter") if isinstance(body, dict) else None
            device = reporter.get("device_id") if isinstance(reporter, dict) else incident.get("device_id")
            return device == device_id
    return False


class IntakeJsonSink:
    def __init__(self, name: str, url: str, token: str | None = None, timeout_s: float = 5,
                 ca_file: str | None = None, incident_type: str = "fire", client: str | None = None) -> None:
        """token: this bridge's bearer token at the intake; client: the client id the intake knows that
        token by (optional: when given, an incident named by a 409 must carry it to be ours)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"intake url must be http(s)://host[:port][/prefix], got {url!r}")
        if ca_file and parts.scheme != "https":
            raise ValueError("ca_file is only meaningful with an https:// url")
        self.name = name
        self.url = url
        self.incident_type = incident_type
        self.client = client
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = float(timeout_s)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "baochay-bridge/0.1"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._ssl = ssl.create_default_context(cafile=ca_file) if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # the connection has answered before (so it may have gone stale)
        self._lock = threading.Lock()

    # -- mapping -----------------------------------------------------------------------------------

    @staticmethod
    def wants(type: str, cause: str) -> bool:
        """Device faults and their restores are the operator's, not the 114 centre's."""
        if type == "fault":
            return False
        return not (type == "restore" and cause not in ("heat", "smoke", "multi"))

    def send(self, report: Report) -> Outcome:
        if report.type == "fault":
            return Outcome.refused(f"{self.name}: fault events are not reported to the 114 intake")
        with self._lock:
            if report.is_update and report.type in UPDATE_KIND:
                if report.incident_id:
                    path = f"/v1/incidents/{quote(report.incident_id, safe='')}/updates"
                    status, body = self._post(path, report.event_id, update_body(report))
                    if status != 404 or body.get("error") != "unknown_incident":
                        return self._outcome(report, status, body)
                payload = report_body(report, self.incident_type, with_references=True)
            else:
                payload = report_body(report, self.incident_type)
            status, body = self._post("/v1/reports", report.event_id, payload)
            return self._outcome(report, status, body, "test_id" if report.type == "test" else "incident_id")

    def _outcome(self, report: Report, status: int, body: dict, ref_key: str = "incident_id") -> Outcome:
        """ref_key: what names the result: the incident, or for a test message its test id."""
        if status < 0:
            return Outcome.retry(body["message"])
        message = body.get("message") or body.get("error") or ""
        if status == 409 and body.get("error") == "idempotency_conflict":
            return self._conflict(report, body)
        if status == 403 and body.get("error") == "not_your_incident":
            return Outcome.refused(f"{self.name}: HTTP 403: incident {report.incident_id} was reported by another "
                                   "client of the intake, so this bridge's token may not update it (was the token "
                                   f"replaced by another client's?): {message}")
        if 200 <= status < 300:
            replay = " (replay)" if status == 200 else ""
            inc = body.get(ref_key)
            if not valid_incident(inc):  # it goes into the device's ack and the operator's screen
                return Outcome.refused(f"{self.name}: HTTP {status} with an {ref_key.replace('_', ' ')} that cannot be passed on "
                                       f"(want 1-{MAX_INCIDENT} printable characters): {str(inc)[:80]!r}")
            return Outcome.accepted(inc, f"HTTP {status}{replay}")
        detail = f"{self.name}: HTTP {status}: {message}".rstrip(": ")
        if status >= 500 or status in RETRY_STATUSES:
            return Outcome.retry(detail)
        return Outcome.refused(detail)

    def _conflict(self, report: Report, body: dict) -> Outcome:
        """A 409: the event's key was used before with another body. Accepted only when the incident it
        names is ours and holds this very event; never a silent failure otherwise."""
        key = report.event_id
        head = f"{self.name}: HTTP 409: event {key} was sent before with another body"
        inc = body.get("incident_id")
        if inc is None:
            what = "as a test message" if "test_id" in body else "and the intake names no incident for it"
            return Outcome.refused(f"{head}, {what}: there is no incident to match it with")
        if not valid_incident(inc):
            return Outcome.refused(f"{head}; the incident id the intake names cannot be passed on "
                                   f"(want 1-{MAX_INCIDENT} printable characters): {str(inc)[:80]!r}")
        status, got = self._request("GET", f"/v1/incidents/{quote(inc, safe='')}")
        if status < 0 or status >= 500 or status in RETRY_STATUSES:  # judged at the next attempt
            why = got.get("message") or f"HTTP {status}"
            return Outcome.retry(f"{head}; incident {inc} could not be fetched to match it: {why}")
        if status == 403 or (status == 200 and self.client is not None and got.get("client") != self.client):
            return Outcome.refused(f"{head}, and the intake names incident {inc}, which another client of the "
                                   "intake reported: this event is not at 114 as this bridge's")
        if status != 200:
            why = got.get("message") or got.get("error") or ""
            return Outcome.refused(f"{head}; incident {inc} it names could not be fetched: HTTP {status}: {why}"
                                   .rstrip(": "))
        if got.get("incident_id") != inc or not _holds(got, key, report.device_id):
            return Outcome.refused(f"{head}; incident {inc} it names holds no event {key} of {report.device_id}: "
                                   "it cannot be matched")
        return Outcome.accepted(inc, f"HTTP 409: the intake has this event, from an earlier body, as {inc}")

    # -- transport ---------------------------------------------------------------------------------

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._used = False
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _post(self, path: str, key: str, payload: dict) -> tuple[int, dict]:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return self._request("POST", path, data, {"Idempotency-Key": key})

    def _request(self, method: str, path: str, data: bytes | None = None,
                 extra: dict | None = None) -> tuple[int, dict]:
        """One request (once more on a stale keep-alive connection). Status -1 means no answer."""
        headers = dict(self._headers, **(extra or {}))
        if data is None:
            headers.pop("Content-Type", None)
        for attempt in (1, 2):
            conn = self._connect()
            reused = self._used
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except _STALE as e:
                self._drop()
                if reused and attempt == 1:
                    continue  # safe to send again: the key makes a repeat harmless, and a GET changes nothing
                return -1, {"message": f"{self.name}: connection closed without an answer: {e!r}"}
            except TimeoutError:
                self._drop()
                return -1, {"message": f"{self.name}: no answer within {self._timeout:g} s"}
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                return -1, {"message": f"{self.name}: {type(e).__name__}: {e}"}
            self._used = True
            if resp.will_close:
                self._drop()
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            if not isinstance(body, dict):
                body = {}
            if not body and resp.status >= 300:
                body = {"message": raw[:200].decode("utf-8", "replace").strip() or resp.reason}
            return resp.status, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()

"""Small HTTP helpers and report fixtures for the intake tests; the server itself runs through the
harness (stack/intake.py)."""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path

from bridge.report import Location, Report, Site

REPO = Path(__file__).resolve().parents[2]
# Two clients of every test intake, as two bridges (two alarm companies) would be.
TOKEN = "s3cret-token-of-bridge-a"
OTHER_TOKEN = "s3cret-token-of-bridge-b"
CLIENTS = {"bridge-a": TOKEN, "bridge-b": OTHER_TOKEN}


def call(port: int, method: str, path: str, body: object = None, headers: dict | None = None,
         token: str | None = TOKEN, timeout: float = 10.0, raw: bytes | None = None) -> tuple[int, dict, object]:
    """One HTTP request; returns (status, headers, parsed JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json"}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        hdrs.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
        ctype = resp.getheader("Content-Type", "")
        parsed = json.loads(text) if ctype.startswith("application/json") else text
        return resp.status, dict(resp.getheaders()), parsed
    finally:
        conn.close()


def event_id(device: str = "hn-a-0001") -> str:
    # Unique per test so tests sharing a server never collide on an idempotency key.
    return f"{device}-{uuid.uuid4().int % 10**8:08d}"


SITE = Site(building="Toà nhà A", address="12 Láng Hạ, Đống Đa, Hà Nội", floor="3", room="301",
            contact_phone="+84 24 3855 0000", province="Hà Nội")
LOC = Location(lat=21.028511, lon=105.804817, accuracy_m=15, source="fixed", fix_age_s=0)


def make_report(**over) -> Report:
    eid = over.pop("event_id", None) or event_id()
    fields = dict(
        event_id=eid, device_id="hn-a-0001", board="esp32-devkitc", type="alarm", cause="button",
        incident_key=eid, references=None, occurred_at=1764412345.0, received_at=1764412345.2,
        location=LOC, site=SITE, confidence=0.95, reasons=("manual call point pressed",),
        readings={},
    )
    fields.update(over)
    return Report(**fields)


def valid_report_body() -> dict:
    return {
        "type": "fire", "cause": "smoke", "event_type": "alarm",
        "occurred_at": "2026-11-29T08:30:00Z", "received_at": "2026-11-29T08:30:00.250Z",
        "location": {"lat": 21.028511, "lon": 105.804817, "accuracy_m": 15, "source": "fixed", "fix_age_s": 0},
        "address": "12 Láng Hạ", "building": "Toà nhà A", "floor": "3", "room": "301", "province": "Hà Nội",
        "ward": "Phường Láng", "ward_code": "00163", "province_code": "01",
        "facility": {"id": "Toà nhà A", "name": "Toà nhà A", "type": "apartment",
                     "type_name": {"vi": "Nhà chung cư", "en": "Apartment building"},
                     "floors_above": 12, "floors_below": 2, "occupancy_day": 300, "occupancy_night": 450,
                     "hazards": ["gas"], "hazards_other": "", "water_sources": ["Trụ nước cổng chính, 20 m"],
                     "contacts": [{"name": "An", "phone": "0901234567"}, {"name": "", "phone": "+842438550000"}]},
        "reporter": {"device_id": "hn-a-0002", "board": "virtual", "contact_phone": "+84 24 3855 0000"},
        "confidence": 0.8, "reasons": ["obscuration 0.2 dB/m"], "readings": {"obs": 0.2, "t": 31.5},
        "media": [],
    }

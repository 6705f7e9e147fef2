"""Validation of the bodies the intake accepts: a report and an incident update.

Each check names the field it is about (dotted path, e.g. `location.lat`) so a caller can fix its
mapping from the error alone. All problems in a body are reported at once, not only the first.
Unknown fields are kept but not interpreted, so a newer client can add fields without breaking.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

INCIDENT_TYPES = ("fire", "rescue", "accident")
ALARM_CAUSES = ("button", "heat", "smoke", "multi", "panel")  # panel: the building's fire alarm panel
REPORT_EVENT_TYPES = ("alarm", "prealarm", "test", "cancel", "restore")
UPDATE_KINDS = ("cancel", "restore", "escalation")
LOCATION_SOURCES = ("gps", "fixed")
MEDIA_KINDS = ("image", "video", "audio", "other")
# What a test message's cause may be: the device's self-test, its periodic test signal, or a test of
# one of its alarm inputs.
TEST_CAUSES = ("selftest", "periodic")
# A facility record's hazard codes (the bridge's bridge/facility_types.py HAZARDS; a test keeps them equal).
HAZARDS = ("gas", "chemicals", "fuel", "none")
# (lowest, highest) of the facility record's whole numbers, as the bridge checks them.
FACILITY_RANGES = {"floors_above": (0, 200), "floors_below": (0, 20), "occupancy_day": (0, 200000),
                   "occupancy_night": (0, 200000)}
WARD_CODE_RE = re.compile(r"^([0-9]{5})?$")
PROVINCE_CODE_RE = re.compile(r"^([0-9]{2})?$")
PHONE_RE = re.compile(r"^\+?[0-9]{8,15}$")

# Top-level fields a report must carry (the OpenAPI file lists the same; a test checks they agree).
REPORT_REQUIRED = ("type", "cause", "event_type", "occurred_at", "location", "reporter")
UPDATE_REQUIRED = ("kind", "occurred_at")

KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TOKEN_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RFC3339_UTC_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
TEXT_MAX = 500
SHORT_MAX = 64


class Invalid(ValueError):
    """One or more field errors; `errors` is a list of {"field", "message"}."""

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(f"{first['field']}: {first['message']}")


class _Checker:
    def __init__(self) -> None:
        self.errors: list[dict] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append({"field": field, "message": message})

    def obj(self, body: dict, name: str, path: str, required: bool) -> dict | None:
        if name not in body or body[name] is None:
            if required:
                self.fail(path, "is required")
            return None
        value = body[name]
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return None
        return value

    def enum(self, body: dict, name: str, path: str, allowed: tuple[str, ...], required: bool = True) -> None:
        if name not in body or body[name] is None:
            if required:
                self.fail(path, f"is required (one of {', '.join(allowed)})")
            return
        if body[name] not in allowed:
            self.fail(path, f"must be one of {', '.join(allowed)}, got {body[name]!r}")

    def text(self, body: dict, name: str, path: str, max_len: int = TEXT_MAX, required: bool = False) -> None:
        if name not in body or body[name] is None:
            if required:
                self.fail(path, "is required")
            return
        value = body[name]
        if not isinstance(value, str):
            self.fail(path, "must be a string")
        elif len(value) > max_len:
            self.fail(path, f"must be at most {max_len} characters")
        elif required and not value.strip():
            self.fail(path, "must not be empty")

    def number(self, body: dict, name: str, path: str, lo: float | None, hi: float | None,
               required: bool = True, integer: bool = False) -> None:
        if name not in body or body[name] is None:
            if required:
                self.fail(path, "is required")
            return
        value = body[name]
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.fail(path, "must be an integer" if integer else "must be a number")
            return
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(path, "must be a finite number")
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(path, f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}")

    def time(self, body: dict, name: str, path: str, required: bool) -> None:
        if name not in body or body[name] is None:
            if required:
                self.fail(path, "is required (RFC 3339, UTC, e.g. 2026-11-29T08:30:00Z)")
            return
        value = body[name]
        if not isinstance(value, str) or not RFC3339_UTC_RE.match(value) or parse_time(value) is None:
            self.fail(path, "must be an RFC 3339 time in UTC ending in Z or +00:00, e.g. 2026-11-29T08:30:00Z")

    def string_list(self, body: dict, name: str, path: str, max_items: int = 32, max_len: int = TEXT_MAX) -> None:
        value = body.get(name)
        if value is None:
            return
        if not isinstance(value, list) or len(value) > max_items:
            self.fail(path, f"must be a list of at most {max_items} strings")
            return
        for i, item in enumerate(value):
            if not isinstance(item, str) or len(item) > max_len:
                self.fail(f"{path}[{i}]", f"must be a string of at most {max_len} characters")

    def pattern(self, body: dict, name: str, path: str, regex: re.Pattern, what: str) -> None:
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or not regex.match(value)):
            self.fail(path, f"must be {what}")


def parse_time(value: str) -> datetime | None:
    try:
        # Python 3.10 does not read "Z"; fractions beyond microseconds are cut to 6 digits.
        text = value.replace("Z", "+00:00")
        if "." in text:
            head, rest = text.split(".", 1)
            frac, tz = rest[:-6], rest[-6:]
            text = f"{head}.{(frac + '000000')[:6]}{tz}"
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def check_key(key: str | None) -> str:
    if not key:
        raise Invalid([{"field": "Idempotency-Key", "message": "header is required (use the event id)"}])
    if not KEY_RE.match(key):
        raise Invalid([{"field": "Idempotency-Key", "message": "must be 1-128 characters of A-Z a-z 0-9 . _ : -"}])
    return key


def _check_location(c: _Checker, body: dict) -> None:
    loc = c.obj(body, "location", "location", required=True)
    if loc is None:
        return
    c.number(loc, "lat", "location.lat", -90, 90)
    c.number(loc, "lon", "location.lon", -180, 180)
    c.number(loc, "accuracy_m", "location.accuracy_m", 0, 100000)
    c.enum(loc, "source", "location.source", LOCATION_SOURCES)
    c.number(loc, "fix_age_s", "location.fix_age_s", 0, None, required=False, integer=True)


def _check_reporter(c: _Checker, body: dict) -> None:
    rep = c.obj(body, "reporter", "reporter", required=True)
    if rep is None:
        return
    c.text(rep, "device_id", "reporter.device_id", SHORT_MAX, required=True)
    c.text(rep, "board", "reporter.board", SHORT_MAX)
    c.text(rep, "contact_phone", "reporter.contact_phone", 32)


def _check_media(c: _Checker, body: dict) -> None:
    media = body.get("media")
    if media is None:
        return
    if not isinstance(media, list) or len(media) > 16:
        c.fail("media", "must be a list of at most 16 objects {url, kind}")
        return
    for i, item in enumerate(media):
        if not isinstance(item, dict):
            c.fail(f"media[{i}]", "must be an object {url, kind}")
            continue
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 2000:
            c.fail(f"media[{i}].url", "must be an http(s) URL of at most 2000 characters")
        c.enum(item, "kind", f"media[{i}].kind", MEDIA_KINDS, required=False)


def _check_facility(c: _Checker, body: dict) -> None:
    f = c.obj(body, "facility", "facility", required=False)
    if f is None:
        return
    c.text(f, "id", "facility.id", 120, required=True)
    c.text(f, "name", "facility.name", 120)
    if f.get("type") not in (None, "") and (not isinstance(f["type"], str) or not TOKEN_RE.match(f["type"])):
        c.fail("facility.type", "must be a lower-case code such as apartment, market, warehouse")
    names = f.get("type_name")
    if names is not None:
        if not isinstance(names, dict):
            c.fail("facility.type_name", "must be an object {vi, en}")
        else:
            for lang in ("vi", "en"):
                c.text(names, lang, f"facility.type_name.{lang}", 200)
    for name, (lo, hi) in FACILITY_RANGES.items():
        c.number(f, name, f"facility.{name}", lo, hi, required=False, integer=True)
    hazards = f.get("hazards")
    if hazards is not None:
        if not isinstance(hazards, list) or len(hazards) > len(HAZARDS):
            c.fail("facility.hazards", f"must be a list of at most {len(HAZARDS)} of {', '.join(HAZARDS)}")
        else:
            for i, h in enumerate(hazards):
                if h not in HAZARDS:
                    c.fail(f"facility.hazards[{i}]", f"must be one of {', '.join(HAZARDS)}, got {h!r}")
            if "none" in hazards and len(hazards) > 1:
                c.fail("facility.hazards", "none cannot go with other hazards")
    c.text(f, "hazards_other", "facility.hazards_other", TEXT_MAX)
    c.string_list(f, "water_sources", "facility.water_sources", max_items=10, max_len=200)
    contacts = f.get("contacts")
    if contacts is None:
        return
    if not isinstance(contacts, list) or len(contacts) > 10:
        c.fail("facility.contacts", "must be a list of at most 10 objects {name, phone}, in calling order")
        return
    for i, contact in enumerate(contacts):
        if not isinstance(contact, dict):
            c.fail(f"facility.contacts[{i}]", "must be an object {name, phone}")
            continue
        c.text(contact, "name", f"facility.contacts[{i}].name", 60)
        if not isinstance(contact.get("phone"), str) or not PHONE_RE.match(contact["phone"]):
            c.fail(f"facility.contacts[{i}].phone", "is required: 8 to 15 digits, '+' allowed first")


def check_report(body: object) -> dict:
    """Validate a POST /v1/reports body; returns it unchanged or raises Invalid."""
    if not isinstance(body, dict):
        raise Invalid([{"field": "(body)", "message": "must be a JSON object"}])
    c = _Checker()
    c.enum(body, "type", "type", INCIDENT_TYPES)
    c.enum(body, "event_type", "event_type", REPORT_EVENT_TYPES)
    event_type = body.get("event_type")
    if event_type in ("alarm", "prealarm"):
        c.enum(body, "cause", "cause", ALARM_CAUSES)
    elif event_type == "test":
        c.enum(body, "cause", "cause", TEST_CAUSES + ALARM_CAUSES)
    elif "cause" not in body or not isinstance(body["cause"], str) or not TOKEN_RE.match(body["cause"]):
        c.fail("cause", "is required: a lower-case word such as button, heat, smoke, multi, sensor")
    c.time(body, "occurred_at", "occurred_at", required=True)
    c.time(body, "received_at", "received_at", required=False)
    _check_location(c, body)
    for name in ("address", "building"):
        c.text(body, name, name)
    for name in ("floor", "room", "province", "ward"):
        c.text(body, name, name, SHORT_MAX)
    c.pattern(body, "ward_code", "ward_code", WARD_CODE_RE, "the ward's official code: 5 digits (or empty)")
    c.pattern(body, "province_code", "province_code", PROVINCE_CODE_RE,
              "the province's official code: 2 digits (or empty)")
    _check_facility(c, body)
    _check_reporter(c, body)
    c.number(body, "confidence", "confidence", 0, 1, required=False)
    c.string_list(body, "reasons", "reasons")
    if body.get("readings") is not None and not isinstance(body["readings"], dict):
        c.fail("readings", "must be an object")
    _check_media(c, body)
    c.text(body, "late", "late")
    ref = body.get("references")
    if event_type in ("cancel", "restore") and ref is None:
        c.fail("references", f"is required for event_type {event_type}: the event id of the report it updates")
    if ref is not None and (not isinstance(ref, str) or not KEY_RE.match(ref)):
        c.fail("references", "must be the Idempotency-Key (event id) of an earlier report")
    if ref is not None and event_type in ("prealarm", "test"):
        c.fail("references", f"is not allowed with event_type {event_type}")
    if c.errors:
        raise Invalid(c.errors)
    return body


def check_update(body: object) -> dict:
    """Validate a POST /v1/incidents/{id}/updates body; returns it unchanged or raises Invalid."""
    if not isinstance(body, dict):
        raise Invalid([{"field": "(body)", "message": "must be a JSON object"}])
    c = _Checker()
    c.enum(body, "kind", "kind", UPDATE_KINDS)
    c.text(body, "reason", "reason")
    c.time(body, "occurred_at", "occurred_at", required=True)
    c.time(body, "received_at", "received_at", required=False)
    if body.get("cause") is not None and (not isinstance(body["cause"], str) or not TOKEN_RE.match(body["cause"])):
        c.fail("cause", "must be a lower-case word such as button, heat, smoke, sensor")
    if body.get("references") is not None and (
        not isinstance(body["references"], str) or not KEY_RE.match(body["references"])
    ):
        c.fail("references", "must be the event id of the report this update refers to")
    if body.get("reporter") is not None:
        _check_reporter(c, body)
    c.number(body, "confidence", "confidence", 0, 1, required=False)
    c.string_list(body, "reasons", "reasons")
    if body.get("readings") is not None and not isinstance(body["readings"], dict):
        c.fail("readings", "must be an object")
    c.text(body, "late", "late")
    if c.errors:
        raise Invalid(c.errors)
    return body

"""Facilities: what the devices' `building` names, the people to call when one of its devices raises
an alarm, in order, and what 114 needs to size a response there: its type, floors, people by day and
by night, hazards and the nearest water. Decree 105's transmission devices call at least three
numbers; fewer is allowed but warned about.

Every field is checked here, with a one-line error naming it, before anything is written."""

from __future__ import annotations

import json
import re
import sqlite3
import time

from .facility_types import FACILITY_TYPES, HAZARDS
from .report import Facility

MIN_CONTACTS = 3
MAX_CONTACTS = 10
NAME_MAX = 120
CONTACT_NAME_MAX = 60
HAZARDS_OTHER_MAX = 200
WATER_MAX = 10  # water sources
WATER_TEXT_MAX = 200
# (lowest, highest) of each whole-number field: beyond any building there is, short of a typo
RANGES = {
    "floors_above": (0, 200),
    "floors_below": (0, 20),
    "occupancy_day": (0, 200000),
    "occupancy_night": (0, 200000),
}
INT_FIELDS = tuple(RANGES)
# What `put` takes besides the name and the contacts; a key left out keeps its stored value.
RECORD_FIELDS = ("type", *INT_FIELDS, "hazards", "hazards_other", "water_sources")
# A Vietnamese number after its 0 or +84: a mobile has 9 digits (3, 5, 7, 8 or 9 first), a landline
# 10 (2 and its area code first), since the 2017-2018 renumbering.
VN_MOBILE_RE = re.compile(r"^[35789][0-9]{8}$")
VN_LANDLINE_RE = re.compile(r"^2[0-9]{9}$")
INTERNATIONAL_RE = re.compile(r"^\+[0-9]{8,15}$")


class FacilityError(ValueError):
    pass


def check_phone(phone: str) -> str:
    """A phone number as typed (spaces, dots, dashes allowed) -> digits with a leading '+' for an
    international one; FacilityError when it is no Vietnamese or international number."""
    p = re.sub(r"[\s.()-]", "", phone)
    national = p[3:] if p.startswith("+84") else p[1:] if p.startswith("0") else None
    if national is not None:
        if VN_MOBILE_RE.match(national) or VN_LANDLINE_RE.match(national):
            return p
        raise FacilityError(f"{phone!r} is not a Vietnamese number: after 0 or +84 a mobile has 9 digits "
                            "(e.g. 0901234567), a landline 10 with its area code (e.g. 02438250000)")
    if INTERNATIONAL_RE.match(p):
        return p
    raise FacilityError(f"{phone!r} is not a phone number: write 0901234567 or +84901234567, or another "
                        "country's as + and 8 to 15 digits")


def parse_contact(text: str) -> dict:
    """'Name=+84901234567' (or just the number) -> {"name", "phone"}; FacilityError when malformed."""
    name, _, phone = text.rpartition("=")
    try:
        phone = check_phone(phone)
    except FacilityError as e:
        raise FacilityError(f"contact {text!r}: {e}") from None
    name = name.strip()
    if len(name) > CONTACT_NAME_MAX:
        raise FacilityError(f"contact {text!r}: the name is longer than {CONTACT_NAME_MAX} characters")
    return {"name": name, "phone": phone}


def digits(phone: str) -> str:
    """The number as the network shows it: digits only, a leading 0 of a national number as 84."""
    d = re.sub(r"\D", "", phone)
    return "84" + d[1:] if d.startswith("0") else d


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_record(given: dict) -> dict:
    """Values as given (CLI strings, or typed) -> stored values; FacilityError naming the field.
    '' for a number clears it (unknown); an empty list clears a list."""
    out: dict = {}
    for k, v in given.items():
        if k == "type":
            v = (v or "").strip().lower()
            if v and v not in FACILITY_TYPES:
                raise FacilityError(f"--type {v!r} is not one of: {', '.join(FACILITY_TYPES)}")
            out[k] = v
        elif k in RANGES:
            lo, hi = RANGES[k]
            if v is None or (isinstance(v, str) and not v.strip()):
                out[k] = None
                continue
            try:
                n = int(v) if not isinstance(v, float) or v.is_integer() else None
            except (TypeError, ValueError):
                n = None
            if n is None or isinstance(v, bool) or not lo <= n <= hi:
                raise FacilityError(f"{_option(k)} must be a whole number from {lo} to {hi}, not {v!r}")
            out[k] = n
        elif k == "hazards":
            codes = list(dict.fromkeys(str(h).strip().lower() for h in v or () if str(h).strip()))
            bad = [h for h in codes if h not in HAZARDS]
            if bad:
                raise FacilityError(f"--hazard {bad[0]!r} is not one of: {', '.join(HAZARDS)}")
            if "none" in codes and len(codes) > 1:
                raise FacilityError("--hazard none cannot go with other hazards")
            out[k] = codes
        elif k == "hazards_other":
            v = " ".join((v or "").split())
            if len(v) > HAZARDS_OTHER_MAX:
                raise FacilityError(f"--hazard-other must be at most {HAZARDS_OTHER_MAX} characters")
            out[k] = v
        elif k == "water_sources":
            items = [" ".join(str(w).split()) for w in v or ()]
            items = [w for w in items if w]
            if len(items) > WATER_MAX:
                raise FacilityError(f"at most {WATER_MAX} --water sources")
            for w in items:
                if len(w) > WATER_TEXT_MAX:
                    raise FacilityError(f"--water {w[:30]!r}...: at most {WATER_TEXT_MAX} characters")
            out[k] = items
        else:
            raise FacilityError(f"unknown facility field {k!r}")
    return out


def put(conn: sqlite3.Connection, facility: str, name: str | None, contacts: list[dict] | None,
        **record) -> list[str]:
    """Create or update a facility; `record`: any of RECORD_FIELDS (checked by check_record), each left
    out kept as stored. Returns warnings for the operator."""
    facility = facility.strip()
    if not facility or len(facility) > NAME_MAX:
        raise FacilityError(f"the facility id (the devices' building) must be 1 to {NAME_MAX} characters")
    if name is not None:
        name = name.strip()
        if len(name) > NAME_MAX:
            raise FacilityError(f"--name must be at most {NAME_MAX} characters")
    if contacts is not None and len(contacts) > MAX_CONTACTS:
        raise FacilityError(f"at most {MAX_CONTACTS} contacts")
    fields = check_record(record)
    row = conn.execute("SELECT * FROM facilities WHERE id=?", (facility,)).fetchone()
    old = _as_dict(row) if row else {"name": "", "contacts": [], "type": "", **dict.fromkeys(INT_FIELDS),
                                       "hazards": [], "hazards_other": "", "water_sources": []}
    new = {**old, **fields}
    if name is not None:
        new["name"] = name
    if contacts is not None:
        new["contacts"] = contacts
    conn.execute(
        "INSERT INTO facilities (id, name, contacts, type, floors_above, floors_below, occupancy_day,"
        " occupancy_night, hazards, hazards_other, water_sources, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
        " contacts=excluded.contacts, type=excluded.type, floors_above=excluded.floors_above,"
        " floors_below=excluded.floors_below, occupancy_day=excluded.occupancy_day,"
        " occupancy_night=excluded.occupancy_night, hazards=excluded.hazards,"
        " hazards_other=excluded.hazards_other, water_sources=excluded.water_sources,"
        " updated_at=excluded.updated_at",
        (facility, new["name"], json.dumps(new["contacts"], ensure_ascii=False), new["type"],
         *(new[k] for k in INT_FIELDS), json.dumps(new["hazards"]), new["hazards_other"],
         json.dumps(new["water_sources"], ensure_ascii=False), time.time()))
    warnings = []
    if len(new["contacts"]) < MIN_CONTACTS:
        warnings.append(f"{facility}: {len(new['contacts'])} contact(s); a transmission device should call at "
                        f"least {MIN_CONTACTS} numbers in order")
    if not conn.execute("SELECT 1 FROM devices WHERE building=? LIMIT 1", (facility,)).fetchone():
        warnings.append(f"{facility}: no registered device has this building yet")
    return warnings


def _as_dict(r: sqlite3.Row) -> dict:
    return {"id": r["id"], "name": r["name"], "contacts": json.loads(r["contacts"]), "type": r["type"],
            **{k: r[k] for k in INT_FIELDS}, "hazards": json.loads(r["hazards"]),
            "hazards_other": r["hazards_other"], "water_sources": json.loads(r["water_sources"])}


def contacts_of(conn: sqlite3.Connection, facility: str) -> list[dict]:
    row = conn.execute("SELECT contacts FROM facilities WHERE id=?", (facility,)).fetchone()
    return json.loads(row["contacts"]) if row else []


def get(conn: sqlite3.Connection, facility: str) -> dict | None:
    row = conn.execute("SELECT * FROM facilities WHERE id=?", (facility,)).fetchone()
    return _as_dict(row) if row else None


def record_of(conn: sqlite3.Connection, facility: str) -> Facility | None:
    """The facility record a report carries; None when the building has none."""
    f = get(conn, facility) if facility else None
    if f is None:
        return None
    return Facility(id=f["id"], name=f["name"], type=f["type"], **{k: f[k] for k in INT_FIELDS},
                    hazards=tuple(f["hazards"]), hazards_other=f["hazards_other"],
                    water_sources=tuple(f["water_sources"]),
                    contacts=tuple((c.get("name", ""), c["phone"]) for c in f["contacts"]))


def all_facilities(conn: sqlite3.Connection) -> list[dict]:
    return [_as_dict(r) for r in conn.execute("SELECT * FROM facilities ORDER BY id")]

"""Facilities: what the devices' `building` names, and the people to call when one of its devices raises
an alarm, in order. Decree 105's transmission devices call at least three numbers; fewer is allowed
but warned about."""

from __future__ import annotations

import json
import re
import sqlite3
import time

PHONE_RE = re.compile(r"^\+?[0-9]{8,15}$")
MIN_CONTACTS = 3
MAX_CONTACTS = 10


class FacilityError(ValueError):
    pass


def parse_contact(text: str) -> dict:
    """'Name=+84901234567' (or just the number) -> {"name", "phone"}; FacilityError when malformed."""
    name, _, phone = text.rpartition("=")
    phone = re.sub(r"[\s.-]", "", phone)
    if not PHONE_RE.match(phone):
        raise FacilityError(f"contact {text!r}: the phone number must be 8 to 15 digits, '+' allowed "
                            "(international form, e.g. +84901234567)")
    name = name.strip()
    if len(name) > 60:
        raise FacilityError(f"contact {text!r}: the name is longer than 60 characters")
    return {"name": name, "phone": phone}


def digits(phone: str) -> str:
    """The number as the network shows it: digits only, a leading 0 of a national number as 84."""
    d = re.sub(r"\D", "", phone)
    return "84" + d[1:] if d.startswith("0") else d


def put(conn: sqlite3.Connection, facility: str, name: str | None, contacts: list[dict] | None) -> list[str]:
    """Create or update a facility; returns warnings for the operator."""
    facility = facility.strip()
    if not facility or len(facility) > 120:
        raise FacilityError("the facility id (the devices' building) must be 1 to 120 characters")
    if contacts is not None and len(contacts) > MAX_CONTACTS:
        raise FacilityError(f"at most {MAX_CONTACTS} contacts")
    row = conn.execute("SELECT name, contacts FROM facilities WHERE id=?", (facility,)).fetchone()
    new_name = name if name is not None else (row["name"] if row else "")
    new_contacts = contacts if contacts is not None else (json.loads(row["contacts"]) if row else [])
    conn.execute("INSERT INTO facilities (id, name, contacts, updated_at) VALUES (?, ?, ?, ?)"
                 " ON CONFLICT(id) DO UPDATE SET name=excluded.name, contacts=excluded.contacts,"
                 " updated_at=excluded.updated_at",
                 (facility, new_name, json.dumps(new_contacts, ensure_ascii=False), time.time()))
    warnings = []
    if len(new_contacts) < MIN_CONTACTS:
        warnings.append(f"{facility}: {len(new_contacts)} contact(s); a transmission device should call at "
                        f"least {MIN_CONTACTS} numbers in order")
    if not conn.execute("SELECT 1 FROM devices WHERE building=? LIMIT 1", (facility,)).fetchone():
        warnings.append(f"{facility}: no registered device has this building yet")
    return warnings


def contacts_of(conn: sqlite3.Connection, facility: str) -> list[dict]:
    row = conn.execute("SELECT contacts FROM facilities WHERE id=?", (facility,)).fetchone()
    return json.loads(row["contacts"]) if row else []


def all_facilities(conn: sqlite3.Connection) -> list[dict]:
    return [{"id": r["id"], "name": r["name"], "contacts": json.loads(r["contacts"])}
            for r in conn.execute("SELECT * FROM facilities ORDER BY id")]

"""Operator faults: offline devices, failed deliveries, sensor faults, low batteries. Each has a time and
a reason, and stays open until the condition clears (a failed delivery: until the sink accepts it late,
an operator closes the alarm, or the fault is acknowledged)."""

from __future__ import annotations

import sqlite3
import time


def raise_fault(conn: sqlite3.Connection, kind: str, reason: str, device: str | None = None,
                sink: str | None = None, unique: bool = True, now: float | None = None,
                event: str | None = None) -> bool:
    """Open a fault; with `unique`, not when one of the same kind is already open for the device/sink.

    Returns True when a new fault was opened."""
    if unique:
        row = conn.execute(
            "SELECT id FROM faults WHERE open=1 AND kind=? AND device IS ? AND sink IS ?",
            (kind, device, sink),
        ).fetchone()
        if row:
            return False
    conn.execute(
        "INSERT INTO faults (ts, device, sink, kind, reason, event) VALUES (?, ?, ?, ?, ?, ?)",
        (now or time.time(), device, sink, kind, reason[:300], event),
    )
    return True


def clear_fault(conn: sqlite3.Connection, kind: str, device: str | None = None, sink: str | None = None,
                now: float | None = None) -> int:
    return conn.execute(
        "UPDATE faults SET open=0, cleared_at=? WHERE open=1 AND kind=? AND device IS ? AND sink IS ?",
        (now or time.time(), kind, device, sink),
    ).rowcount


def clear_event(conn: sqlite3.Connection, kind: str, event: str, sink: str | None = None,
                now: float | None = None) -> int:
    """Close the open faults of `kind` about one event (a failed delivery later accepted or closed)."""
    return conn.execute(
        "UPDATE faults SET open=0, cleared_at=? WHERE open=1 AND kind=? AND event=? AND (? IS NULL OR sink=?)",
        (now or time.time(), kind, event, sink, sink),
    ).rowcount


def clear_by_id(conn: sqlite3.Connection, fault_id: int) -> int:
    return conn.execute("UPDATE faults SET open=0, cleared_at=? WHERE id=? AND open=1",
                        (time.time(), fault_id)).rowcount


def open_faults(conn: sqlite3.Connection, device: str | None = None) -> list[sqlite3.Row]:
    if device is None:
        return conn.execute("SELECT * FROM faults WHERE open=1 ORDER BY ts").fetchall()
    return conn.execute("SELECT * FROM faults WHERE open=1 AND device=? ORDER BY ts", (device,)).fetchall()

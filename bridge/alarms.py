"""Alarms the 114 side has not accepted: what the operator sees of them and how one is closed.

A delivery that failed (the device was told, the operator has a fault) stays pending and is sent again
until the sink accepts it or its horizon passes (bridge/stages/deliver.py). An operator who has made
sure the incident reached 114 another way (a phone call) closes it, saying why: sending stops, the
fault clears, and the reason is kept with the delivery row.
"""

from __future__ import annotations

import sqlite3
import time

from .faults import clear_event

MAX_WHY = 300


class CloseError(ValueError):
    pass


def undelivered(conn: sqlite3.Connection) -> list[dict]:
    """Every delivery not accepted (pending, failed, closed), newest first, with its event."""
    return [dict(r) for r in conn.execute(
        "SELECT d.event_id, d.sink, d.state, d.attempts, d.created_at, d.failed_at, d.done_at, d.last_error,"
        " d.closed_why, e.dev, e.type, e.cause FROM deliveries d JOIN events e ON e.id=d.event_id"
        " WHERE d.state<>'accepted' ORDER BY d.created_at DESC LIMIT 200")]


def close(conn: sqlite3.Connection, event_id: str, why: str, now: float | None = None) -> list[str]:
    """Stop sending one event to every sink still trying; returns the sinks closed. CloseError says
    why nothing was closed (no reason given, unknown event, nothing pending)."""
    why = " ".join(why.split())
    if not why:
        raise CloseError("say why (--why): it is kept with the alarm, e.g. 'called 114 by phone at 10:42'")
    if len(why) > MAX_WHY:
        raise CloseError(f"--why is {len(why)} characters; at most {MAX_WHY}")
    now = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")
    try:
        known = conn.execute("SELECT 1 FROM events WHERE id=?", (event_id,)).fetchone()
        if known is None:
            raise CloseError(f"no event {event_id!r} (see `baochay-bridge alarms list`)")
        sinks = [r["sink"] for r in conn.execute(
            "SELECT sink FROM deliveries WHERE event_id=? AND state='pending' ORDER BY sink", (event_id,))]
        if not sinks:
            states = ", ".join(f"{r['sink']}: {r['state']}" for r in conn.execute(
                "SELECT sink, state FROM deliveries WHERE event_id=? ORDER BY sink", (event_id,))) or "no sinks"
            raise CloseError(f"nothing to close: {event_id} is not being sent ({states})")
        conn.execute("UPDATE deliveries SET state='closed', done_at=?, closed_why=? WHERE event_id=? AND state='pending'",
                     (now, why, event_id))
        for sink in sinks:
            clear_event(conn, "delivery", event_id, sink=sink, now=now)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return sinks

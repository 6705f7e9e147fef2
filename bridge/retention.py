"""Retention: what the database forgets, so it does not grow until the disk is full.

Events older than `store.retain_days` go, with their delivery rows, once every delivery of theirs is
settled (accepted, given up or closed): an alarm still being sent is never forgotten, however old.
Closed faults and reject counters older than that go too. What replay protection needs stays: for each
install the highest pruned counter is kept in `pruned`, and a frame at or below it is refused as
forgotten (bridge/stages/authenticate.py), not taken for a late alarm.

Deletes run in small transactions through the store writer, so ingest never waits long behind them.
"""

from __future__ import annotations

import sqlite3

BATCH = 2000  # events per transaction: a few milliseconds of the writer's time


def prune_batch(conn: sqlite3.Connection, before: float, limit: int = BATCH) -> int:
    """Inside a transaction: forget up to `limit` settled events received before `before`; returns how many."""
    rows = conn.execute(
        "SELECT seq, id, dev, ep, ctr FROM events e WHERE received_at < ? AND NOT EXISTS"
        " (SELECT 1 FROM deliveries d WHERE d.event_id=e.id AND d.state='pending') ORDER BY seq LIMIT ?",
        (before, limit)).fetchall()
    if not rows:
        return 0
    highest: dict[tuple[str, str], int] = {}
    for r in rows:
        k = (r["dev"], r["ep"])
        highest[k] = max(highest.get(k, r["ctr"]), r["ctr"])
    conn.executemany(
        "INSERT INTO pruned (dev, ep, ctr) VALUES (?, ?, ?)"
        " ON CONFLICT(dev, ep) DO UPDATE SET ctr=MAX(ctr, excluded.ctr)",
        [(dev, ep, ctr) for (dev, ep), ctr in highest.items()])
    ids = [(r["id"],) for r in rows]
    conn.executemany("DELETE FROM deliveries WHERE event_id=?", ids)
    conn.executemany("DELETE FROM events WHERE id=?", ids)
    return len(rows)


def prune_other(conn: sqlite3.Connection, before: float) -> int:
    """Inside a transaction: closed faults and reject counters last touched before `before`."""
    n = conn.execute("DELETE FROM faults WHERE open=0 AND cleared_at < ?", (before,)).rowcount
    n += conn.execute("DELETE FROM rejects WHERE last_at < ?", (before,)).rowcount
    return n


def pruned_through(conn: sqlite3.Connection, dev: str, ep: str) -> int | None:
    row = conn.execute("SELECT ctr FROM pruned WHERE dev=? AND ep=?", (dev, ep)).fetchone()
    return row[0] if row else None

"""Callouts: when an alarm is stored, its facility's contacts are told, one after the other.

The first contact's row is written in the same transaction as the alarm (`open_callout`, called by
the store writer), so a bridge that dies after the commit still calls. This worker sends what is due
through the notifier (bridge/notify/), records the network's receipts, and goes on to the next contact
when one has not answered within `notify.ack_s` or the message could not be delivered. Any reply from
a called number acknowledges its alarm: nobody further is called. A cancel stops the callout too.
When every contact was called and nobody answered, or messages cannot be sent at all, the operator
gets a `callout` fault.

Row states: due -> sent -> delivered -> acked, or -> passed (no answer in time); sent -> bounced (the
network could not deliver it) -> undelivered once the next contact is due; stopped (cancelled, or
someone else answered first).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time

from .. import db
from ..facilities import contacts_of, digits
from ..faults import clear_event, raise_fault
from ..notify import NotifyError, Receipt, Reply
from ..notify.message import alarm_text

log = logging.getLogger("bridge.callouts")

RETRY_MAX_S = 60.0
CLAIM_S = 30.0  # longer than a send can take
FAULT_AFTER_TRIES = 3  # a message that fails this many times in a row: the operator hears of it


def open_callout(conn: sqlite3.Connection, event_id: str, facility: str, now: float) -> bool:
    """Inside the alarm's transaction: its facility's first contact becomes due. False: no contacts."""
    contacts = contacts_of(conn, facility) if facility else []
    if not contacts:
        return False
    c = contacts[0]
    conn.execute("INSERT OR IGNORE INTO callouts (event_id, facility, idx, name, phone, state, created_at, next_at)"
                 " VALUES (?, ?, 0, ?, ?, 'due', ?, ?)", (event_id, facility, c["name"], c["phone"], now, now))
    return True


class CalloutWorker(threading.Thread):
    def __init__(self, db_path, notifier, registry, *, ack_s: float = 120.0, metrics=None, clock=time.time):
        super().__init__(name="callouts", daemon=True)
        self.db_path = db_path
        self.notifier = notifier
        self.registry = registry
        self.ack_s = float(ack_s)
        self.metrics = metrics
        self.clock = clock
        self.heard: queue.SimpleQueue = queue.SimpleQueue()  # Receipt | Reply from the notifier's thread
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self.conn: sqlite3.Connection | None = None

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def _heard(self, ev) -> None:
        self.heard.put(ev)
        self.wake.set()

    def run(self) -> None:
        self.conn = db.connect(self.db_path, durable=False)
        self.notifier.start(self._heard)
        while not self._stopping.is_set():
            self.wake.clear()
            try:
                while True:
                    try:
                        ev = self.heard.get_nowait()
                    except queue.Empty:
                        break
                    self._apply(ev)
                self.pump()
            except Exception:
                log.exception("callouts: unexpected error; going on")
            self.wake.wait(0.5)
        self.notifier.close()
        self.conn.close()

    # --- what the network and the contacts say ---
    def _apply(self, ev) -> None:
        conn = self.conn
        assert conn is not None
        now = self.clock()
        if isinstance(ev, Receipt):
            like = f"% {ev.msg_id} %"
            with db.transaction(conn):
                if ev.delivered:
                    conn.execute("UPDATE callouts SET state='delivered', delivered_at=? WHERE state='sent'"
                                 " AND (' ' || msg_ids || ' ') LIKE ?", (now, like))
                else:
                    conn.execute("UPDATE callouts SET state='bounced', error=? WHERE state IN ('sent', 'delivered')"
                                 " AND (' ' || msg_ids || ' ') LIKE ?", (f"not delivered: {ev.detail}", like))
        elif isinstance(ev, Reply):
            self._acked(conn, ev, now)

    def _acked(self, conn: sqlite3.Connection, ev: Reply, now: float) -> None:
        sender = digits(ev.sender)
        rows = conn.execute("SELECT * FROM callouts WHERE state IN ('sent', 'delivered', 'passed', 'bounced',"
                            " 'undelivered')"
                            " ORDER BY sent_at DESC").fetchall()
        row = next((r for r in rows if digits(r["phone"]) == sender), None)
        if row is None:
            log.info("a reply from a number no callout is waiting on", extra={"sender": ev.sender[:20]})
            return
        if conn.execute("SELECT 1 FROM callouts WHERE event_id=? AND state='acked'", (row["event_id"],)).fetchone():
            return  # someone answered first
        with db.transaction(conn):
            conn.execute("UPDATE callouts SET state='acked', acked_at=?, reply=? WHERE id=?",
                         (now, ev.text[:160], row["id"]))
            conn.execute("UPDATE callouts SET state='stopped' WHERE event_id=? AND state='due'", (row["event_id"],))
            clear_event(conn, "callout", row["event_id"])
        if self.metrics is not None:
            self.metrics.callouts.labels("acked").inc()
        log.info("alarm acknowledged by its contact", extra={"event": row["event_id"], "contact": row["idx"] + 1,
                                                              "after_s": round(now - row["created_at"], 1)})

    # --- sending and going on ---
    def pump(self) -> None:
        conn = self.conn
        assert conn is not None
        now = self.clock()
        for r in conn.execute("SELECT c.*, e.dev, e.body, e.received_at FROM callouts c JOIN events e ON e.id=c.event_id"
                              " WHERE c.state='due' AND c.next_at<=? ORDER BY c.id", (now,)).fetchall():
            if self._cancelled(r["event_id"]):
                with db.transaction(conn):
                    conn.execute("UPDATE callouts SET state='stopped', error='the alarm was cancelled' WHERE id=?",
                                 (r["id"],))
                continue
            self._send(r)
        late = now - self.ack_s
        for r in conn.execute("SELECT * FROM callouts WHERE (state IN ('sent', 'delivered') AND sent_at<=?)"
                              " OR state='bounced'", (late,)).fetchall():
            self._next_contact(r, now)

    def _cancelled(self, event_id: str) -> bool:
        assert self.conn is not None
        return self.conn.execute("SELECT 1 FROM events WHERE type='cancel' AND ref=? LIMIT 1",
                                 (event_id,)).fetchone() is not None

    def _send(self, r) -> None:
        conn = self.conn
        assert conn is not None
        # claimed first: another bridge process on this database may be looking at the same row; a
        # claim left by a process that died is due again when its lease ends
        with db.transaction(conn):
            if conn.execute("UPDATE callouts SET next_at=? WHERE id=? AND state='due' AND next_at=?",
                            (self.clock() + CLAIM_S, r["id"], r["next_at"])).rowcount != 1:
                return
        device = self.registry.get(r["dev"])
        facility = conn.execute("SELECT name FROM facilities WHERE id=?", (r["facility"],)).fetchone()
        # a facility set without --name is known by its id, the devices' `building`
        text = alarm_text(json.loads(r["body"]), device, (facility["name"] if facility else "") or r["facility"],
                          r["received_at"], r["idx"])
        try:
            ids = self.notifier.send(r["phone"], text)
        except NotifyError as e:
            tries = r["attempts"] + 1
            again = self.clock() + min(RETRY_MAX_S, 2.0 * 2 ** (tries - 1))
            with db.transaction(conn):
                conn.execute("UPDATE callouts SET attempts=?, next_at=?, error=? WHERE id=?",
                             (tries, again, str(e)[:200], r["id"]))
                if tries == FAULT_AFTER_TRIES:
                    raise_fault(conn, "callout", f"alarm {r['event_id']}: cannot message contact {r['idx'] + 1} "
                                f"({r['phone']}): {e}; still trying", event=r["event_id"], unique=False)
            if self.metrics is not None:
                self.metrics.callouts.labels("send_failed").inc()
            log.warning("callout message not sent; trying again", extra={"event": r["event_id"], "attempt": tries,
                                                                        "detail": str(e)[:200]})
            return
        with db.transaction(conn):
            conn.execute("UPDATE callouts SET state='sent', msg_ids=?, sent_at=?, attempts=attempts+1, error=NULL"
                         " WHERE id=?", (ids, self.clock(), r["id"]))
            if r["attempts"] >= FAULT_AFTER_TRIES:
                clear_event(conn, "callout", r["event_id"])
        if self.metrics is not None:
            self.metrics.callouts.labels("sent").inc()
        log.info("contact messaged about an alarm", extra={"event": r["event_id"], "contact": r["idx"] + 1})

    def _next_contact(self, r, now: float) -> None:
        """No answer in time (or not delivered): the next contact, or a fault when there is none."""
        conn = self.conn
        assert conn is not None
        contacts = contacts_of(conn, r["facility"])
        nxt = r["idx"] + 1
        with db.transaction(conn):
            if r["state"] == "bounced":
                conn.execute("UPDATE callouts SET state='undelivered' WHERE id=?", (r["id"],))
            else:
                conn.execute("UPDATE callouts SET state='passed' WHERE id=?", (r["id"],))
            if conn.execute("SELECT 1 FROM callouts WHERE event_id=? AND state='acked'", (r["event_id"],)).fetchone():
                return
            if nxt < len(contacts) and not self._cancelled(r["event_id"]):
                c = contacts[nxt]
                conn.execute("INSERT OR IGNORE INTO callouts (event_id, facility, idx, name, phone, state,"
                             " created_at, next_at) VALUES (?, ?, ?, ?, ?, 'due', ?, ?)",
                             (r["event_id"], r["facility"], nxt, c["name"], c["phone"], now, now))
                why = "not delivered" if r["state"] == "bounced" else f"no answer within {self.ack_s:.0f} s"
                log.warning("callout goes on to the next contact", extra={"event": r["event_id"],
                                                                          "contact": nxt + 1, "reason": why})
            elif nxt >= len(contacts):
                raise_fault(conn, "callout", f"alarm {r['event_id']}: none of the {len(contacts)} contacts of "
                            f"{r['facility']} answered", event=r["event_id"], unique=False)
                log.error("callout: no contact answered", extra={"event": r["event_id"],
                                                                 "contacts": len(contacts)})

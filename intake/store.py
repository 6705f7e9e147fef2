"""The intake's durable state in SQLite: incidents, their updates, and the idempotency keys.

Every write happens under one lock and one transaction, so "look the key up, then create" cannot race
between two requests carrying the same key. A restarted intake reopens the same file and answers a
replayed key exactly as before.

Everything belongs to a client (intake/clients.py): an incident to the client that reported it, and
an idempotency key to the client that sent it, so two clients' keys never meet (two bridges may well
number their events alike) and `references` finds only the client's own reports. Only the owner may
update an incident. A file from before clients is migrated on open: its rows become `default`'s.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from datetime import datetime, timezone

from .clients import DEFAULT_CLIENT

# update kind -> the incident status it leaves behind
STATUS_AFTER = {"cancel": "cancelled", "restore": "restored", "escalation": "open"}
# report event_type carrying `references` -> update kind
KIND_OF_EVENT = {"cancel": "cancel", "restore": "restore", "alarm": "escalation"}

IDEMPOTENCY_TABLE = """
CREATE TABLE IF NOT EXISTS idempotency (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    scope TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (client, key)
)"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS incidents (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status TEXT NOT NULL,
    event_type TEXT NOT NULL,
    report TEXT NOT NULL,
    client TEXT NOT NULL DEFAULT '{DEFAULT_CLIENT}'
);
CREATE INDEX IF NOT EXISTS incidents_by_client ON incidents(client, seq);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    incident_id TEXT NOT NULL REFERENCES incidents(id),
    kind TEXT NOT NULL,
    received_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_by_incident ON updates(incident_id, seq);
CREATE TABLE IF NOT EXISTS tests (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    report TEXT NOT NULL,
    client TEXT NOT NULL DEFAULT '{DEFAULT_CLIENT}'
);
{IDEMPOTENCY_TABLE};
"""


class NotFound(LookupError):
    pass


class NotYours(Exception):
    """The incident exists, and another client reported it."""

    def __init__(self, incident_id: str) -> None:
        super().__init__(incident_id)
        self.incident_id = incident_id


class Conflict(Exception):
    """The key was used before with another body (or on another endpoint).

    `incident_id`: what the key's first use created: an incident, or with `test` a test message."""

    def __init__(self, key: str, incident_id: str, test: bool = False) -> None:
        super().__init__(key)
        self.key = key
        self.incident_id = incident_id
        self.test = test


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What makes a body "the same" for its Idempotency-Key: the event itself, as the device saw it. The
# bridge's assessment (confidence, reasons, reason) and the site details from its registry may be
# revised between two attempts at the same event; a retry carrying them is still the same event.
REPORT_IDENTITY = ("type", "cause", "event_type", "occurred_at", "location", "readings", "references")
UPDATE_IDENTITY = ("kind", "cause", "occurred_at", "references", "readings")


def body_hash(scope: str, body: dict) -> str:
    fields = UPDATE_IDENTITY if scope.startswith("update") else REPORT_IDENTITY
    identity = {k: body.get(k) for k in fields}
    identity["device_id"] = (body.get("reporter") or {}).get("device_id")
    # Canonical form, so key order and white space in a retried body do not count as a change.
    canon = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{scope}\n{canon}".encode()).hexdigest()


class Store:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an incident the intake answered 201 for must survive a power cut.
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()
        self._db.executescript(SCHEMA)

    def _columns(self, table: str) -> set[str]:
        return {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}

    def _migrate(self) -> None:
        """Bring a file from before clients up to SCHEMA, in one transaction: its incidents, tests and
        keys become the default client's. A new or current file is left as it is."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            for table in ("incidents", "tests"):
                if table in tables and "client" not in self._columns(table):
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN client TEXT NOT NULL"
                                     f" DEFAULT '{DEFAULT_CLIENT}'")
            if "idempotency" in tables and "client" not in self._columns("idempotency"):
                # The primary key changes from (key) to (client, key): SQLite can only rebuild the table.
                self._db.execute("ALTER TABLE idempotency RENAME TO idempotency_before_clients")
                self._db.execute(IDEMPOTENCY_TABLE)
                self._db.execute(
                    "INSERT INTO idempotency (client, key, scope, body_hash, incident_id, response, created_at)"
                    " SELECT ?, key, scope, body_hash, incident_id, response, created_at"
                    " FROM idempotency_before_clients", (DEFAULT_CLIENT,))
                self._db.execute("DROP TABLE idempotency_before_clients")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ------------------------------------------------------------------------------------

    def _replay(self, client: str, key: str, scope: str, digest: str,
                incident_id: str | None = None) -> dict | None:
        """The stored answer for a key seen before, None for a new key; raises Conflict.

        `incident_id`: the incident this request updates. An update that reached us once through
        /v1/reports (with `references`) and again through /v1/incidents/{id}/updates, or the other way
        round, is the same event under the same key: a replay, not a conflict.
        """
        row = self._db.execute("SELECT * FROM idempotency WHERE client = ? AND key = ?", (client, key)).fetchone()
        if row is None:
            return None
        if row["scope"] == scope and row["body_hash"] == digest:
            return json.loads(row["response"])
        earlier = json.loads(row["response"])
        crossed = row["scope"] != scope and "update_id" in earlier
        if crossed and incident_id is not None and row["incident_id"] == incident_id:
            return earlier
        raise Conflict(key, row["incident_id"], test="test_id" in earlier)

    def _remember(self, client: str, key: str, scope: str, digest: str, response: dict, now: str) -> None:
        self._db.execute(
            "INSERT INTO idempotency (client, key, scope, body_hash, incident_id, response, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (client, key, scope, digest, response.get("incident_id") or response["test_id"], json.dumps(response),
             now),
        )

    def _new_incident(self, client: str, report: dict, status: str, event_type: str, now: str) -> str:
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM incidents").fetchone()[0]
        incident_id = f"114-{now[:10].replace('-', '')}-{seq:06d}"
        self._db.execute(
            "INSERT INTO incidents (seq, id, created_at, updated_at, status, event_type, report, client)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, incident_id, now, now, status, event_type, json.dumps(report, ensure_ascii=False), client),
        )
        return incident_id

    def _new_test(self, client: str, report: dict, now: str) -> str:
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM tests").fetchone()[0]
        test_id = f"114-test-{now[:10].replace('-', '')}-{seq:06d}"
        self._db.execute("INSERT INTO tests (seq, id, received_at, report, client) VALUES (?, ?, ?, ?, ?)",
                         (seq, test_id, now, json.dumps(report, ensure_ascii=False), client))
        return test_id

    def _add_update(self, incident_id: str, kind: str, body: dict, now: str) -> str:
        n = self._db.execute("SELECT COUNT(*) FROM updates WHERE incident_id = ?", (incident_id,)).fetchone()[0]
        update_id = f"{incident_id}-u{n + 1}"
        self._db.execute(
            "INSERT INTO updates (id, incident_id, kind, received_at, body) VALUES (?, ?, ?, ?, ?)",
            (update_id, incident_id, kind, now, json.dumps(body, ensure_ascii=False)),
        )
        sets = "status = ?, updated_at = ?"
        args: list = [STATUS_AFTER[kind], now]
        if kind == "escalation":
            sets += ", event_type = 'alarm'"
        self._db.execute(f"UPDATE incidents SET {sets} WHERE id = ?", (*args, incident_id))
        return update_id

    def _incident_of_key(self, client: str, key: str) -> str | None:
        """The client's incident its key `key` opened or updated; another client's keys are not looked at,
        and a test message's key names no incident."""
        row = self._db.execute(
            "SELECT i.id FROM idempotency k JOIN incidents i ON i.id = k.incident_id"
            " WHERE k.client = ? AND k.key = ? AND i.client = ?", (client, key, client)).fetchone()
        return row["id"] if row else None

    def submit_report(self, client: str, key: str, report: dict) -> tuple[bool, dict]:
        """Store a client's report once per key. Returns (created, response); raises Conflict."""
        scope = "report"
        digest = body_hash(scope, report)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            ref = report.get("references")
            target = self._incident_of_key(client, ref) if ref is not None else None
            earlier = self._replay(client, key, scope, digest, target)
            if earlier is not None:
                return False, earlier
            now = now_rfc3339()
            event_type = report["event_type"]
            response: dict
            if event_type == "test":  # the transmission path checked: recorded, and no incident opened
                response = {"test_id": self._new_test(client, report, now), "status": "test", "received_at": now}
            elif ref is None:
                incident_id = self._new_incident(client, report, "open", event_type, now)
                response = {"incident_id": incident_id, "status": "open", "received_at": now}
            else:
                kind = KIND_OF_EVENT[event_type]
                orphan = target is None
                if target is None:
                    # The referenced report never reached us (from this client): open the incident from
                    # this body so the update is not lost, and say so.
                    level = "alarm" if kind == "escalation" else event_type
                    incident_id = self._new_incident(client, report, STATUS_AFTER[kind], level, now)
                else:
                    incident_id = target
                response = self._update(incident_id, kind, report, now)
                if orphan:
                    response["note"] = "reference unknown: incident opened from this update"
            self._remember(client, key, scope, digest, response, now)
            return True, response

    def _update(self, incident_id: str, kind: str, body: dict, now: str) -> dict:
        """Record one update of an incident; the answer the API gives for it."""
        update_id = self._add_update(incident_id, kind, body, now)
        return {"incident_id": incident_id, "update_id": update_id, "kind": kind,
                "status": STATUS_AFTER[kind], "received_at": now}

    def submit_update(self, client: str, key: str, incident_id: str, update: dict) -> tuple[bool, dict]:
        """Add an update to the client's incident once per key. Raises NotFound, NotYours or Conflict."""
        scope = f"update:{incident_id}"
        digest = body_hash(scope, update)
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT client FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                raise NotFound(incident_id)
            if row["client"] != client:
                raise NotYours(incident_id)
            earlier = self._replay(client, key, scope, digest, incident_id)
            if earlier is not None:
                return False, earlier
            now = now_rfc3339()
            kind = update["kind"]
            response = self._update(incident_id, kind, update, now)
            self._remember(client, key, scope, digest, response, now)
            return True, response

    # -- reads -------------------------------------------------------------------------------------

    @staticmethod
    def _summary(row: sqlite3.Row, n_updates: int) -> dict:
        report = json.loads(row["report"])
        reporter = report.get("reporter") or {}
        return {
            "incident_id": row["id"],
            "client": row["client"],
            "status": row["status"],
            "event_type": row["event_type"],
            "type": report.get("type"),
            "cause": report.get("cause"),
            "occurred_at": report.get("occurred_at"),
            "received_at": row["created_at"],
            "updated_at": row["updated_at"],
            "address": report.get("address", ""),
            "building": report.get("building", ""),
            "floor": report.get("floor", ""),
            "room": report.get("room", ""),
            "province": report.get("province", ""),
            "ward": report.get("ward", ""),
            "ward_code": report.get("ward_code", ""),
            "province_code": report.get("province_code", ""),
            "facility": report.get("facility"),
            "location": report.get("location"),
            "confidence": report.get("confidence"),
            "device_id": reporter.get("device_id"),
            "update_count": n_updates,
        }

    def list_incidents(self, limit: int = 100, client: str | None = None) -> list[dict]:
        """Newest first: the client's, or with client None everyone's (the 114 centre's own page)."""
        where, args = ("WHERE i.client = ?", (client,)) if client is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT i.*, (SELECT COUNT(*) FROM updates u WHERE u.incident_id = i.id) AS n"
                f" FROM incidents i {where} ORDER BY i.seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [self._summary(r, r["n"]) for r in rows]

    def list_tests(self, limit: int = 100, client: str | None = None) -> list[dict]:
        """Test messages, newest first: which device checked its path to 114, and when."""
        where, args = ("WHERE client = ?", (client,)) if client is not None else ("", ())
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM tests {where} ORDER BY seq DESC LIMIT ?",
                                    (*args, limit)).fetchall()
        out = []
        for r in rows:
            report = json.loads(r["report"])
            out.append({"test_id": r["id"], "client": r["client"], "received_at": r["received_at"],
                        "cause": report.get("cause"),
                        "occurred_at": report.get("occurred_at"),
                        "device_id": (report.get("reporter") or {}).get("device_id"),
                        "building": report.get("building", ""), "readings": report.get("readings") or {}})
        return out

    def get_incident(self, incident_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                return None
            ups = self._db.execute(
                "SELECT * FROM updates WHERE incident_id = ? ORDER BY seq", (incident_id,)
            ).fetchall()
            keys = self._db.execute("SELECT key, response FROM idempotency WHERE client = ? AND incident_id = ?",
                                    (row["client"], incident_id)).fetchall()
        # Which key opened it and which key made each update: how a client tells its own event here.
        opened_by, key_of = None, {}
        for k in keys:
            update_id = json.loads(k["response"]).get("update_id")
            if update_id is None:
                opened_by = k["key"]
            else:
                key_of[update_id] = k["key"]
        out = self._summary(row, len(ups))
        out["idempotency_key"] = opened_by
        out["report"] = json.loads(row["report"])
        out["updates"] = [
            {"update_id": u["id"], "kind": u["kind"], "received_at": u["received_at"],
             "idempotency_key": key_of.get(u["id"]), **_update_view(u["body"])}
            for u in ups
        ]
        return out

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM incidents").fetchone()[0]


def _update_view(body_text: str) -> dict:
    body = json.loads(body_text)
    return {
        "reason": body.get("reason", ""),
        "occurred_at": body.get("occurred_at"),
        "references": body.get("references"),
        "body": body,
    }

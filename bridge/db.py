"""The bridge's SQLite database: one file holding the registry, events, outboxes, faults and device state.

Durability: WAL mode. Connections that record events before the device is told `stored` use
synchronous=FULL, so every commit is fsynced (the writer batches many events per commit). Connections
that only record delivery progress use synchronous=NORMAL: after a power cut such a row may roll back,
which only makes the outbox send the report again, and sinks are idempotent by event id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    board TEXT NOT NULL DEFAULT '',
    building TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    floor TEXT NOT NULL DEFAULT '',
    room TEXT NOT NULL DEFAULT '',
    lat REAL,
    lon REAL,
    acc REAL,
    contact_phone TEXT NOT NULL DEFAULT '',
    province TEXT NOT NULL DEFAULT '',
    supervision TEXT NOT NULL DEFAULT 'mains',
    dc09_account TEXT NOT NULL DEFAULT '',
    dc09_receiver TEXT NOT NULL DEFAULT '',
    dc09_line TEXT NOT NULL DEFAULT '',
    added_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS device_state (
    id TEXT PRIMARY KEY,
    online INTEGER NOT NULL DEFAULT 0,
    state_reason TEXT NOT NULL DEFAULT '',
    last_seen REAL,
    fw TEXT, boot INTEGER, rssi INTEGER, batt_pct REAL, batt_v REAL,
    heap_free INTEGER, outbox INTEGER,
    highest_ctr INTEGER,
    cmd_ctr INTEGER NOT NULL DEFAULT 0,
    epoch TEXT,
    epoch_at REAL,
    epoch_prev TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    dev TEXT NOT NULL,
    ep TEXT NOT NULL DEFAULT '',
    ctr INTEGER NOT NULL,
    type TEXT NOT NULL,
    cause TEXT NOT NULL,
    ref TEXT,
    incident_key TEXT NOT NULL,
    building TEXT NOT NULL DEFAULT '',
    body BLOB NOT NULL,
    received_at REAL NOT NULL,
    stage TEXT NOT NULL DEFAULT 'stored',
    stage_at REAL,
    incident TEXT,
    reason TEXT,
    late TEXT
);
CREATE INDEX IF NOT EXISTS events_recv ON events(received_at);
CREATE INDEX IF NOT EXISTS events_ref ON events(ref);
CREATE INDEX IF NOT EXISTS events_building ON events(building, received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    first_attempt_at REAL,
    done_at REAL,
    ref TEXT,
    last_error TEXT,
    failed_at REAL,
    closed_why TEXT,
    PRIMARY KEY (sink, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(sink, state, seq);
CREATE TABLE IF NOT EXISTS faults (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device TEXT,
    sink TEXT,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    open INTEGER NOT NULL DEFAULT 1,
    cleared_at REAL,
    event TEXT
);
CREATE INDEX IF NOT EXISTS faults_open ON faults(open, device, kind);
CREATE TABLE IF NOT EXISTS rejects (
    reason TEXT NOT NULL,
    device TEXT NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    last_at REAL NOT NULL,
    PRIMARY KEY (reason, device)
);
-- a facility (the devices' `building`) and the people to call, in order (bridge/facilities.py)
CREATE TABLE IF NOT EXISTS facilities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    contacts TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL DEFAULT 0
);
-- one row per contact called about an alarm (bridge/workers/callouts.py)
CREATE TABLE IF NOT EXISTS callouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    facility TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'due',
    msg_ids TEXT,
    created_at REAL NOT NULL,
    next_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at REAL,
    delivered_at REAL,
    acked_at REAL,
    reply TEXT,
    error TEXT,
    UNIQUE (event_id, idx)
);
CREATE INDEX IF NOT EXISTS callouts_open ON callouts(state, next_at);
-- per install, the highest counter whose event retention deleted (bridge/retention.py)
CREATE TABLE IF NOT EXISTS pruned (
    dev TEXT NOT NULL,
    ep TEXT NOT NULL,
    ctr INTEGER NOT NULL,
    PRIMARY KEY (dev, ep)
);
-- firmware updates (bridge/ota/rollout.py): the bundles uploaded, the rollouts, each device's progress
CREATE TABLE IF NOT EXISTS ota_bundles (
    version TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    security_version INTEGER NOT NULL,
    boards TEXT NOT NULL,
    min_base TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    uploaded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ota_rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version TEXT NOT NULL,
    target TEXT NOT NULL,
    canary_pct REAL NOT NULL,
    max_fail_pct REAL NOT NULL,
    accepted_failures INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'running',
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ota_devices (
    rollout INTEGER NOT NULL,
    dev TEXT NOT NULL,
    canary INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'queued',
    off INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    offered_at REAL,
    pending_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (rollout, dev)
);
CREATE INDEX IF NOT EXISTS ota_devices_dev ON ota_devices(dev, state);
-- bundles `ota upload` refused (bad signature, bad hash, a version reused): shown by `ota status`
CREATE TABLE IF NOT EXISTS ota_refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v TEXT
);
"""
# Columns added since the first schema: a database made before them gets them on open.
ADDED_COLUMNS = (
    ("events", "ep", "TEXT NOT NULL DEFAULT ''"),  # the install's epoch ('' before epochs)
    ("events", "late", "TEXT"),  # why an event was stored late (below its epoch's highest counter)
    ("device_state", "epoch", "TEXT"),  # the device's current install
    ("device_state", "epoch_at", "REAL"),  # when it began (first event of the install stored)
    ("device_state", "epoch_prev", "TEXT"),  # the install before it, when the device was re-flashed
    ("deliveries", "failed_at", "REAL"),  # when the device was told `failed`; sending goes on after it
    ("deliveries", "closed_why", "TEXT"),  # an operator closed it (`alarms close`): why, and who said so
    ("faults", "event", "TEXT"),  # the event a delivery fault is about: cleared by its late acceptance
    ("devices", "ward", "TEXT NOT NULL DEFAULT ''"),  # the 2025 ward or commune (bridge/address.py)
    ("devices", "ward_code", "TEXT NOT NULL DEFAULT ''"),  # its official code
    ("devices", "province_code", "TEXT NOT NULL DEFAULT ''"),  # the province's official code
    # the facility record 114 sizes a response by (bridge/facilities.py); NULL or '': not recorded
    ("facilities", "type", "TEXT NOT NULL DEFAULT ''"),  # a code of bridge/facility_types.py
    ("facilities", "floors_above", "INTEGER"),
    ("facilities", "floors_below", "INTEGER"),
    ("facilities", "occupancy_day", "INTEGER"),
    ("facilities", "occupancy_night", "INTEGER"),
    ("facilities", "hazards", "TEXT NOT NULL DEFAULT '[]'"),  # JSON list of hazard codes
    ("facilities", "hazards_other", "TEXT NOT NULL DEFAULT ''"),
    ("facilities", "water_sources", "TEXT NOT NULL DEFAULT '[]'"),  # JSON list of texts
    ("device_state", "last_test", "REAL"),  # when its last `test` event was received (test supervision)
    ("ota_devices", "boot_at_offer", "INTEGER"),  # the device's boot count when first offered (reboots)
)
INDEXES = """
CREATE INDEX IF NOT EXISTS events_dev_ep ON events(dev, ep, ctr);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
"""


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column, decl in ADDED_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            except sqlite3.OperationalError as e:  # another process on this database added it first
                if "duplicate column" not in str(e):
                    raise
    conn.executescript(INDEXES)


def connect(path: str | Path, durable: bool = True, readonly: bool = False) -> sqlite3.Connection:
    """Open the database (creating the schema), autocommit mode; transactions are explicit."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=" + ("FULL" if durable else "NORMAL"))
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    _migrate(conn)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (ROLLBACK on any error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise

"""`baochay-bridge status`: a readable picture of the fleet, read from the database alone, so it works
when the bridge is down (the header then says how long ago the bridge was last alive)."""

from __future__ import annotations

import sqlite3
import time

from . import db, storage

OPEN_ALARM_WINDOW_S = 24 * 3600
NEW_INSTALL_SHOWN_S = 7 * 24 * 3600  # how long a re-flash stays marked in the device list


def _ago(ts, now) -> str:
    if ts is None:
        return "never"
    d = max(0, now - float(ts))
    if d < 120:
        return f"{d:.0f} s ago"
    if d < 7200:
        return f"{d / 60:.0f} min ago"
    if d < 172800:
        return f"{d / 3600:.1f} h ago"
    return f"{d / 86400:.0f} d ago"


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
    out += [fmt.format(*r).rstrip() for r in cells]
    return out


def collect(conn: sqlite3.Connection, now: float | None = None, db_path: str | None = None) -> dict:
    """Everything `status` shows, as plain data (the text view and tests read this). With db_path,
    also the bridges' state files (alive and storage, when the database cannot be written) and sizes."""
    now = now or time.time()
    meta = {r["k"]: r["v"] for r in conn.execute("SELECT k, v FROM meta")}
    states = storage.read_states(db_path) if db_path else []
    alive = [float(s["alive"]) for s in states if isinstance(s.get("alive"), (int, float))]
    if alive and max(alive) > float(meta.get("alive") or 0):
        meta["alive"] = str(max(alive))  # the database may be what cannot be written
    devices = [dict(r) for r in conn.execute(
        "SELECT d.id, d.building, d.floor, d.room, d.supervision, s.online, s.state_reason, s.last_seen,"
        " s.batt_pct, s.rssi, s.fw, s.epoch, s.epoch_at, s.epoch_prev, s.last_test"
        " FROM devices d LEFT JOIN device_state s ON s.id=d.id ORDER BY d.id")]
    alarms = [dict(r) for r in conn.execute(
        "SELECT e.id, e.dev, e.type, e.cause, e.received_at, e.stage, e.incident, e.reason, e.late FROM events e"
        " WHERE e.type IN ('alarm','prealarm') AND e.received_at>?"
        " AND NOT EXISTS (SELECT 1 FROM events c WHERE c.incident_key=e.incident_key AND c.type='cancel')"
        " ORDER BY e.received_at DESC LIMIT 50", (now - OPEN_ALARM_WINDOW_S,))]
    sinks = [dict(r) for r in conn.execute(
        "SELECT sink, SUM(state='pending') AS backlog, SUM(state='accepted') AS accepted,"
        " SUM(state='pending' AND failed_at IS NOT NULL) AS retrying, SUM(state='failed') AS failed,"
        " SUM(state='closed') AS closed FROM deliveries GROUP BY sink ORDER BY sink")]
    for s in sinks:
        row = conn.execute(
            "SELECT last_error FROM deliveries WHERE sink=? AND last_error IS NOT NULL AND last_error<>''"
            " ORDER BY COALESCE(done_at, next_at) DESC LIMIT 1", (s["sink"],)).fetchone()
        s["last_error"] = row["last_error"] if row else ""
    faults = [dict(r) for r in conn.execute("SELECT * FROM faults WHERE open=1 ORDER BY ts DESC LIMIT 100")]
    callouts = [dict(r) for r in conn.execute(
        "SELECT event_id, facility, idx, name, phone, state, created_at, sent_at, acked_at, reply, error"
        " FROM callouts WHERE created_at>? ORDER BY id DESC LIMIT 60", (now - OPEN_ALARM_WINDOW_S,))]
    rejects = [dict(r) for r in conn.execute("SELECT * FROM rejects ORDER BY n DESC LIMIT 30")]
    failing = [s for s in states if s.get("storage") and now - float(s.get("alive") or 0) < 30]
    size = {"bytes": storage.db_bytes(db_path) if db_path else None,
            "events": conn.execute("SELECT COUNT(*) FROM events").fetchone()[0],
            "oldest": conn.execute("SELECT MIN(received_at) FROM events").fetchone()[0]}
    return {"now": now, "meta": meta, "devices": devices, "alarms": alarms, "sinks": sinks,
            "faults": faults, "rejects": rejects, "storage_failing": failing, "size": size, "callouts": callouts}


def render(data: dict) -> str:
    now = data["now"]
    meta = data["meta"]
    lines = []
    alive = meta.get("alive")
    if alive is None:
        lines.append("bridge: never ran on this database")
    else:
        age = now - float(alive)
        state = "running" if age < 10 else "NOT RUNNING"
        lines.append(f"bridge {meta.get('bridge_id', '?')} {meta.get('version', '')}: {state} "
                     f"(last alive {_ago(alive, now)})")
        broker = meta.get("broker")
        if broker and broker != "connected":
            since, _, why = broker.removeprefix("unreachable since ").partition(": ")
            try:
                when = _ago(float(since), now)
            except ValueError:
                when = since
            lines.append(f"broker: UNREACHABLE since {when} ({why}): devices cannot be heard; none is judged "
                         "offline meanwhile")
        elif broker:
            lines.append("broker: connected")
    for st in data.get("storage_failing", []):
        f = st["storage"]
        lines.append(f"storage: FAILING since {_ago(f.get('since'), now)} ({f.get('error', '?')}): nothing is "
                     f"acked or dropped meanwhile; {st.get('store_queue', '?')} waiting to be written "
                     f"[bridge {st.get('bridge_id', '?')}]")
    size = data.get("size")
    if size:
        mb = f"{size['bytes'] / 1e6:.1f} MB, " if size.get("bytes") is not None else ""
        oldest = f", oldest received {_ago(size['oldest'], now)}" if size.get("oldest") else ""
        lines.append(f"database: {mb}{size['events']} events{oldest}")
    lines.append("")
    lines.append(f"DEVICES ({sum(1 for d in data['devices'] if d['online'])} online of {len(data['devices'])})")
    rows = []
    for d in data["devices"]:
        where = " / ".join(x for x in (d["building"], d["floor"], d["room"]) if x)
        state = "online" if d["online"] else ("offline" if d["online"] is not None else "unknown")
        batt = f"{d['batt_pct']:g} %" if d["batt_pct"] is not None else "-"
        rssi = f"{d['rssi']} dBm" if d["rssi"] is not None else "-"
        install = d["epoch"] or ""
        if d["epoch_prev"] is not None and d["epoch_at"] and now - d["epoch_at"] < NEW_INSTALL_SHOWN_S:
            install += f" NEW {_ago(d['epoch_at'], now)} (was {d['epoch_prev'] or 'before epochs'})"
        rows.append([d["id"], state, _ago(d["last_seen"], now), _ago(d["last_test"], now), batt, rssi,
                     d["supervision"], install, where])
    lines += _table(["device", "state", "last seen", "last test", "battery", "rssi", "class", "install", "where"],
                    rows)
    lines.append("")
    lines.append(f"OPEN ALARMS ({len(data['alarms'])}, last 24 h, not cancelled)")
    lines += _table(["event", "type", "cause", "received", "stage", "incident / reason"],
                    [[a["id"], a["type"], a["cause"], _ago(a["received_at"], now),
                      a["stage"] + (" (late)" if a["late"] else ""), a["incident"] or a["reason"] or ""]
                     for a in data["alarms"]])
    lines.append("")
    lines.append("SINKS")
    lines += _table(["sink", "backlog", "accepted", "failed, still trying", "gave up", "closed", "last error"],
                    [[s["sink"], s["backlog"], s["accepted"], s["retrying"], s["failed"], s["closed"],
                      (s["last_error"] or "")[:80]] for s in data["sinks"]])
    if data.get("callouts"):
        lines.append("")
        lines.append("CALLOUTS (contacts told of alarms, last 24 h)")
        lines += _table(["event", "facility", "#", "contact", "state", "since", "reply / error"],
                        [[c["event_id"], c["facility"], c["idx"] + 1, f"{c['name']} {c['phone']}".strip(),
                          c["state"], _ago(c["sent_at"] or c["created_at"], now),
                          (c["reply"] or c["error"] or "")[:60]] for c in data["callouts"]])
    lines.append("")
    lines.append(f"FAULTS ({len(data['faults'])} open)")
    lines += _table(["#", "since", "device", "sink", "kind", "reason"],
                    [[f["id"], _ago(f["ts"], now), f["device"] or "", f["sink"] or "", f["kind"], f["reason"][:90]]
                     for f in data["faults"]])
    if data["rejects"]:
        lines.append("")
        lines.append("REJECTED MESSAGES")
        lines += _table(["reason", "device", "count", "last"],
                        [[r["reason"], r["device"], r["n"], _ago(r["last_at"], now)] for r in data["rejects"]])
    return "\n".join(lines)


def status_text(db_path: str) -> str:
    conn = db.connect(db_path, readonly=True)
    try:
        return render(collect(conn, db_path=db_path))
    finally:
        conn.close()

"""Bundles and rollouts in the bridge database: what `baochay-bridge ota` writes and the OTA worker
(bridge/ota/worker.py) carries out. Durable: a bridge restarted in the middle of a rollout goes on
from these rows.

A device's state in a rollout moves queued -> offered -> downloading (or waiting, an alarm first)
-> pending (installed, rebooting) -> confirming (new version's birth and self-test seen, confirm
sent) -> confirmed; or ends refused, failed or rolled-back with the reason.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import time
from pathlib import Path

from .bundle import Bundle, BundleError, load_public_key, read_bundle

ROLLOUT_STATES = ("running", "paused", "halted", "aborted", "done")
DEVICE_STATES = ("queued", "offered", "downloading", "waiting", "pending", "confirming", "confirmed",
                 "refused", "failed", "rolled-back", "skipped")
FINAL = ("confirmed", "refused", "failed", "rolled-back", "skipped")
FAILURES = ("failed", "rolled-back")  # what counts against a rollout (a refusal is the target's fit)


class OtaError(ValueError):
    pass


def bundle_dir(cfg: dict) -> Path:
    d = cfg["ota"]["dir"] or str(Path(cfg["db"]).parent / "bundles")
    return Path(d)


def release_key(cfg: dict):
    path = cfg["ota"]["release_key"]
    if not path:
        raise OtaError("no release key: set ota.release_key in the bridge config to the release.pub "
                       "that `baochay-provision release keygen` wrote")
    try:
        return load_public_key(path)
    except BundleError as e:
        raise OtaError(f"release key {path}: {e.detail}") from None


def upload(conn: sqlite3.Connection, cfg: dict, path: str | Path) -> Bundle:
    """Verify a bundle with the release key and keep it (a copy under the bundle directory). A
    bundle refused is recorded with the reason, for `ota status`."""
    key = release_key(cfg)  # no key is the bridge's configuration, not the bundle's fault
    try:
        b = read_bundle(Path(path), key)
    except BundleError as e:
        _refused(conn, path, e.reason, e.detail)
        raise
    d = bundle_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{b.sha256}.bcb"
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(path, tmp)
        with open(tmp, "rb") as f:
            import os

            os.fsync(f.fileno())
        tmp.replace(target)
    old = conn.execute("SELECT sha256 FROM ota_bundles WHERE version=?", (b.version,)).fetchone()
    if old and old["sha256"] != b.sha256:
        _refused(conn, path, "version-reused", f"version {b.version} is already uploaded with other contents")
        raise OtaError(f"version {b.version} is already uploaded with other contents (sha256 "
                       f"{old['sha256'][:12]}…); a release keeps its version")
    conn.execute("INSERT OR IGNORE INTO ota_bundles (version, sha256, security_version, boards, min_base, size, "
                 "path, uploaded_at) VALUES (?,?,?,?,?,?,?,?)",
                 (b.version, b.sha256, b.security_version, json.dumps(b.boards), b.min_base, b.size,
                  str(target), time.time()))
    return b


def failing_checks(selftest: dict) -> set[str]:
    """The checks a self-test's data names as failed ("fail", or false as the sensing summary `ok`)."""
    return {k for k, v in selftest.items() if k != "pass" and (v == "fail" or v is False)}


def no_worse(new: dict, before: dict | None) -> bool:
    """Whether the new version's self-test proves it: it passed, or every check failing now failed
    in the self-test before the update too (hardware already missing or broken is not the new
    version's doing). With nothing to compare with, it must pass."""
    if new.get("pass") is True:
        return True
    return before is not None and failing_checks(new) <= failing_checks(before)


def _refused(conn: sqlite3.Connection, path: str | Path, reason: str, detail: str) -> None:
    conn.execute("INSERT INTO ota_refusals (file, reason, detail, at) VALUES (?,?,?,?)",
                 (str(Path(path).resolve()), reason, detail, time.time()))


def refused_uploads(conn: sqlite3.Connection, limit: int = 10) -> list[dict]:
    """The bundles `ota upload` refused, the latest first."""
    return [dict(r) for r in conn.execute("SELECT file, reason, detail, at FROM ota_refusals ORDER BY id DESC "
                                          "LIMIT ?", (limit,))]


def bundle_row(conn: sqlite3.Connection, version: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM ota_bundles WHERE version=?", (version,)).fetchone()
    if row is None:
        have = [r[0] for r in conn.execute("SELECT version FROM ota_bundles ORDER BY uploaded_at")]
        raise OtaError(f"no bundle {version!r} uploaded (have: {', '.join(have) or 'none'}); "
                       "`baochay-bridge ota upload BUNDLE` first")
    return row


def parse_target(text: str) -> tuple[str, list[str]]:
    """`building=A,B`, `board=X`, `devices=a,b` or `all` -> (kind, values)."""
    if text == "all":
        return "all", []
    kind, _, vals = text.partition("=")
    values = [v.strip() for v in vals.split(",") if v.strip()]
    if kind not in ("building", "board", "devices") or not values:
        raise OtaError(f"--to {text!r}: use building=NAME[,NAME], board=NAME[,NAME], devices=ID[,ID] or all")
    return kind, values


def targets(conn: sqlite3.Connection, text: str) -> list[str]:
    kind, values = parse_target(text)
    if kind == "all":
        rows = conn.execute("SELECT id FROM devices ORDER BY id").fetchall()
    elif kind == "devices":
        rows = conn.execute(f"SELECT id FROM devices WHERE id IN ({','.join('?' * len(values))}) ORDER BY id",
                            values).fetchall()
        missing = set(values) - {r[0] for r in rows}
        if missing:
            raise OtaError(f"not registered: {', '.join(sorted(missing))}")
    else:
        rows = conn.execute(f"SELECT id FROM devices WHERE {kind} IN ({','.join('?' * len(values))}) ORDER BY id",
                            values).fetchall()
    if not rows:
        raise OtaError(f"--to {text}: no registered device matches")
    return [r[0] for r in rows]


def start_rollout(conn: sqlite3.Connection, version: str, to: str, canary_pct: float = 10.0,
                  max_fail_pct: float = 0.0) -> int:
    """A new rollout of an uploaded bundle to the devices `to` names; the first canary_pct percent of
    them (at least one) go first. Any running rollout to the same devices is superseded."""
    bundle_row(conn, version)
    if not 0 <= canary_pct <= 100 or not 0 <= max_fail_pct <= 100:
        raise OtaError("--canary and --max-fail are percentages, 0 to 100")
    devs = targets(conn, to)
    now = time.time()
    n_canary = max(1, math.ceil(len(devs) * canary_pct / 100)) if canary_pct > 0 else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        qs = ",".join("?" * len(devs))
        conn.execute(f"UPDATE ota_devices SET state='skipped', reason='superseded by a newer rollout', "
                     f"updated_at=? WHERE dev IN ({qs}) AND state NOT IN ('confirmed','refused','failed',"
                     f"'rolled-back','skipped')", [now, *devs])
        cur = conn.execute("INSERT INTO ota_rollouts (version, target, canary_pct, max_fail_pct, state, created_at, "
                           "updated_at) VALUES (?,?,?,?, 'running', ?, ?)",
                           (version, to, canary_pct, max_fail_pct, now, now))
        rid = int(cur.lastrowid or 0)
        conn.executemany("INSERT INTO ota_devices (rollout, dev, canary, state, updated_at) VALUES (?,?,?, 'queued', ?)",
                         [(rid, d, 1 if i < n_canary else 0, now) for i, d in enumerate(devs)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return rid


def set_state(conn: sqlite3.Connection, rid: int | None, state: str, reason: str = "") -> int:
    """pause, resume (running), abort: the latest rollout when rid is None. Returns its id."""
    row = (conn.execute("SELECT id, state FROM ota_rollouts WHERE id=?", (rid,)).fetchone() if rid is not None
           else conn.execute("SELECT id, state FROM ota_rollouts ORDER BY id DESC LIMIT 1").fetchone())
    if row is None:
        raise OtaError("no such rollout" if rid is not None else "no rollout yet")
    allowed = {"paused": ("running",), "running": ("paused", "halted"), "aborted": ("running", "paused", "halted")}
    if row["state"] not in allowed[state]:
        raise OtaError(f"rollout {row['id']} is {row['state']}: cannot make it {state}")
    now = time.time()
    conn.execute("UPDATE ota_rollouts SET state=?, reason=?, updated_at=? WHERE id=?", (state, reason, now, row["id"]))
    if state == "running" and row["state"] == "halted":
        # the operator has seen the failures that halted it: they no longer count, later ones do
        conn.execute("UPDATE ota_rollouts SET accepted_failures=(SELECT COUNT(*) FROM ota_devices WHERE rollout=? "
                     "AND state IN ('failed','rolled-back')) WHERE id=?", (row["id"], row["id"]))
        conn.execute("UPDATE ota_devices SET state='queued', reason=NULL, updated_at=? WHERE rollout=? "
                     "AND state='skipped' AND reason='rollout halted'", (now, row["id"]))
    if state == "aborted":
        conn.execute("UPDATE ota_devices SET state='skipped', reason='rollout aborted', updated_at=? "
                     "WHERE rollout=? AND state IN ('queued','offered','downloading','waiting')", (now, row["id"]))
    return int(row["id"])


def status(conn: sqlite3.Connection, rid: int | None = None) -> list[dict]:
    """Rollouts (the latest first, or one) with their devices, as `ota status` and health show them."""
    rows = (conn.execute("SELECT * FROM ota_rollouts WHERE id=?", (rid,)).fetchall() if rid is not None
            else conn.execute("SELECT * FROM ota_rollouts ORDER BY id DESC LIMIT 5").fetchall())
    out = []
    for r in rows:
        devs = [dict(d) for d in conn.execute("SELECT * FROM ota_devices WHERE rollout=? ORDER BY canary DESC, dev",
                                              (r["id"],))]
        for d in devs:
            d["pct"] = (100 * d["off"] // d["size"]) if d["size"] else None
        counts: dict[str, int] = {}
        for d in devs:
            counts[d["state"]] = counts.get(d["state"], 0) + 1
        out.append({**dict(r), "devices": devs, "counts": counts})
    return out

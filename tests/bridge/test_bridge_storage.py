"""Storage failures never jam or drop: a full disk and a database locked past its timeout, on a real
bridge process, a real broker and a real filesystem. Retention keeps the database from growing."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import time

import pytest
from bridge_harness import metric, wait_for
from test_bridge_store_deliver import DEV, incoming

from bridge import db, retention
from bridge.workers.store_writer import Incoming, StoreWriter
from firmware import protocol
from stack.ports import free_port


def _fill(path) -> None:
    """Write `path` until the filesystem under it is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512):  # big writes, then the last bytes
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs of our own: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("a full-disk test mounts a small tmpfs: run as root (CI does)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _status(bridge) -> dict:
    return json.loads(bridge.cli("status", "--json").stdout)


def test_a_full_disk_keeps_every_alarm_raises_the_storage_fault_and_clears_it(fleet, broker, make_bridge,
                                                                             small_disk):
    port = free_port()
    bridge = make_bridge(db=str(small_disk / "bridge.db"), store={"fault_after_s": 1},
                         metrics={"host": "127.0.0.1", "port": port}).start()
    dev = fleet.sim("hn-t-0001", broker).connect()
    first = dev.alarm()
    dev.wait_stage(first, "accepted")
    ballast = small_disk / "ballast"
    _fill(ballast)
    # alarms and telemetry while the disk is full: none can be stored yet
    during = []
    for _ in range(5):
        during.append(dev.alarm())
        dev.telemetry()
    data = wait_for(lambda: (lambda d: d if d["storage_failing"] else None)(_status(bridge)), timeout=20)
    fault = data["storage_failing"][0]["storage"]
    assert "full" in fault["error"], fault
    text = bridge.cli("status").stdout
    assert "storage: FAILING since" in text and "nothing is acked or dropped" in text, text
    assert "bridge test" in text and "running" in text  # alive, though the database cannot say so
    assert all(dev.stage(e) is None for e in during), [dev.stage(e) for e in during]  # no false `stored`
    assert "storage failing" in bridge.log_path.read_text()
    assert metric(port, "baochay_storage_ok") == 0
    ballast.unlink()
    for e in during:
        assert dev.wait_stage(e, "accepted", timeout=30)["incident"]
    wait_for(lambda: not _status(bridge)["storage_failing"], timeout=10)
    wait_for(lambda: metric(port, "baochay_storage_ok") == 1)
    after = dev.alarm()
    dev.wait_stage(after, "accepted")
    conn = db.connect(bridge.db, readonly=True)
    try:
        rows = conn.execute("SELECT reason, open, ts, cleared_at FROM faults WHERE kind='storage'").fetchall()
        stored = {r["id"] for r in conn.execute("SELECT id FROM events")}
    finally:
        conn.close()
    assert len(rows) == 1 and rows[0]["open"] == 0 and rows[0]["cleared_at"] > rows[0]["ts"], [dict(r) for r in rows]
    assert "could not be written" in rows[0]["reason"]
    assert set(during) | {first, after} <= stored
    assert "storage writes succeed again" in bridge.log_path.read_text()


def test_a_database_locked_past_its_timeout_delays_the_alarm_and_loses_nothing(fleet, broker, make_bridge):
    bridge = make_bridge(store={"fault_after_s": 1}).start()
    dev = fleet.sim("hn-t-0002", broker).connect()
    dev.wait_stage(dev.alarm(), "accepted")
    # another process holds the write lock (a backup tool, an operator's sqlite3 shell)
    locker = sqlite3.connect(bridge.db, isolation_level=None, timeout=1)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        held = dev.alarm()
        data = wait_for(lambda: (lambda d: d if d["storage_failing"] else None)(_status(bridge)), timeout=20)
        assert "waited" in data["storage_failing"][0]["storage"]["error"]
        assert dev.stage(held) is None
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert dev.wait_stage(held, "accepted", timeout=60)["incident"]
    wait_for(lambda: not _status(bridge)["storage_failing"], timeout=10)


EP = "a1b2c3d4"


def _event(ctr: int, received_at: float) -> Incoming:
    return dataclasses.replace(incoming(ctr, ep=EP), received_at=received_at)


def test_retention_forgets_old_settled_events_keeps_pending_ones_and_refuses_their_replay(tmp_path):
    dbp = tmp_path / "bridge.db"
    results = []
    w = StoreWriter(dbp, ["s"], results.append)
    w.start()
    assert w.started_ok.wait(5)
    old = time.time() - 100 * 86400
    for ctr in (1, 2, 3):
        w.submit_event(_event(ctr, old))
    wait_for(lambda: len(results) == 3)
    conn = db.connect(dbp)
    # event 1 and 2 were accepted long ago; event 3 is still being sent (an alarm never forgotten)
    conn.execute("UPDATE deliveries SET state='accepted' WHERE event_id IN (?, ?)",
                 (protocol.event_id(DEV, 1, EP), protocol.event_id(DEV, 2, EP)))
    conn.execute("BEGIN IMMEDIATE")
    n = retention.prune_batch(conn, time.time() - 90 * 86400)
    conn.execute("COMMIT")
    assert n == 2
    left = [r["ctr"] for r in conn.execute("SELECT ctr FROM events ORDER BY ctr")]
    assert left == [3]
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1
    assert retention.pruned_through(conn, DEV, EP) == 2
    conn.close()
    # a replay of a forgotten frame is refused, not taken for a late alarm; a new one is new
    w.submit_event(_event(2, time.time()))
    w.submit_event(_event(4, time.time()))
    wait_for(lambda: len(results) == 5)
    assert [r.verdict for r in results[3:]] == ["forgotten", "new"]
    w.stop()
    w.join(5)


def test_a_job_that_cannot_run_is_dropped_and_counted_not_retried_forever(tmp_path):
    dbp = tmp_path / "bridge.db"
    results = []
    w = StoreWriter(dbp, ["s"], results.append)
    w.start()
    assert w.started_ok.wait(5)

    def bad(conn):
        conn.execute("INSERT INTO rejects (reason, device, n, last_at) VALUES (NULL, 'x', 1, 0)")  # NOT NULL
    w.submit(bad)
    w.submit_event(_event(1, time.time()))
    wait_for(lambda: len(results) == 1 and w.backlog() == 0)
    assert results[0].verdict == "new" and w.dropped == 1
    w.stop()
    w.join(5)


def test_delivery_keeps_its_outcome_through_a_locked_database_and_sends_once(tmp_path):
    """The sink accepted; the database cannot take the outcome: the worker keeps it and writes it when
    it can, without sending the report again, and the device's `accepted` waits for that commit."""
    from test_bridge_stages import KEY
    from test_bridge_store_deliver import Clock, ScriptedSink, store_all
    from test_bridge_store_deliver import worker as make_worker

    from bridge.registry import Registry

    dbp = tmp_path / "b.db"
    Registry(dbp).upsert({"id": DEV, "key": KEY.hex(), "building": "Toa nha A", "lat": 21.0, "lon": 105.8})
    store_all(dbp, [incoming(1)])
    sink = ScriptedSink([])
    w, stages = make_worker(dbp, sink, Clock(1002.0))
    w.conn.execute("PRAGMA busy_timeout=50")
    locker = sqlite3.connect(dbp, isolation_level=None, timeout=1)
    real_send = sink.send

    def send_then_lock(report):  # another process takes the write lock while the report is out
        out = real_send(report)
        locker.execute("BEGIN EXCLUSIVE")
        return out
    sink.send = send_then_lock
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        w.pump()
    assert len(sink.reports) == 1 and stages == []
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        w.pump()  # still locked: nothing sent again
    assert len(sink.reports) == 1
    locker.execute("ROLLBACK")
    assert w.pump() == 0  # the kept outcome is written; the row is no longer due
    assert len(sink.reports) == 1
    assert [s[1] for s in stages] == ["accepted"]
    assert w.conn.execute("SELECT state FROM deliveries").fetchone()[0] == "accepted"

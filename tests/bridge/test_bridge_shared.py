"""Several bridge processes on one shared subscription and one database: each alarm stored once, acked,
and delivered to the sink once, whichever process receives it."""

from __future__ import annotations

import threading
import time

import pytest
from bridge_harness import Fleet, bridge_for, metric, wait_for
from test_bridge_store_deliver import DEV, Clock, Results, ScriptedSink, incoming

from bridge import db
from bridge.registry import Registry
from bridge.stages.deliver import DeliveryPolicy
from bridge.workers.delivery import DeliveryWorker
from bridge.workers.store_writer import StoreWriter
from stack.ports import free_port


@pytest.fixture
def dbp(tmp_path):
    p = tmp_path / "shared.db"
    Registry(p).upsert({"id": DEV, "key": "00" * 32, "building": "Toa nha A", "lat": 21.0, "lon": 105.8})
    return p


def store_with(writer: StoreWriter, items) -> list:
    """Submit to a running writer and wait for its verdicts."""
    res = Results()
    writer.on_result = res
    for it in items:
        writer.submit_event(it)
    wait_for(lambda: len(res.items) == len(items), timeout=10)
    return [r.verdict for r in res.items]


def test_the_replay_decision_sees_what_another_process_stored(dbp):
    a = StoreWriter(dbp, ["s"], lambda r: None)
    b = StoreWriter(dbp, ["s"], lambda r: None)
    a.start()
    b.start()
    try:
        assert store_with(b, [incoming(1)]) == ["new"]
        assert store_with(a, [incoming(c) for c in (2, 3, 5, 6)]) == ["new"] * 4
        # b last stored counter 1 itself; the database says 6: the never-stored counter 4 is late (kept
        # and forwarded), and counter 6 a duplicate
        assert store_with(b, [incoming(4), incoming(6), incoming(7)]) == ["late", "duplicate", "new"]
    finally:
        for w in (a, b):
            w.stop()
            w.join(10)


def test_an_overtaken_event_is_stored_late_not_rejected(dbp):
    w = StoreWriter(dbp, ["s"], lambda r: None)
    w.start()
    try:
        # counter 5 reached the other process first; 4 arrives after it: late, stored and forwarded
        assert store_with(w, [incoming(5), incoming(4), incoming(4)]) == ["new", "late", "duplicate"]
        # however far back: an authentic event that was never stored is never dropped
        assert store_with(w, [incoming(80), incoming(10)]) == ["new", "late"]
    finally:
        w.stop()
        w.join(10)
    conn = db.connect(dbp)
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 4


def test_two_processes_workers_claim_rows_so_each_report_is_sent_once(dbp):
    w = StoreWriter(dbp, ["s"], lambda r: None)
    w.start()
    store_with(w, [incoming(c) for c in range(1, 41)])
    w.stop()
    w.join(10)
    sinks = [ScriptedSink([]), ScriptedSink([])]
    for s in sinks:
        send = s.send
        s.send = lambda report, send=send: (time.sleep(0.002), send(report))[1]  # let the two interleave
    workers = []
    for sink in sinks:
        wk = DeliveryWorker(sink, dbp, Registry(dbp), acked=False, on_stage=lambda *a: None,
                            policy=DeliveryPolicy(jitter=0.0, batch=4), clock=Clock(1045.0), claim_s=20.0)
        wk.conn = db.connect(dbp, durable=False)
        workers.append(wk)

    def drain(wk):
        while wk.backlog():
            wk.pump()

    threads = [threading.Thread(target=drain, args=(wk,)) for wk in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    sent = sorted(r.event_id for s in sinks for r in s.reports)
    assert sent == [f"{DEV}-{c:08d}" for c in range(1, 41)]  # every report exactly once
    assert all(s.reports for s in sinks)  # both took part
    conn = db.connect(dbp)
    assert conn.execute("SELECT COUNT(*) FROM deliveries WHERE state='accepted'").fetchone()[0] == 40


def test_claimed_rows_not_reached_are_handed_back_due_as_before(dbp):
    w = StoreWriter(dbp, ["s"], lambda r: None)
    w.start()
    store_with(w, [incoming(1), incoming(2, type="cancel", ref=f"{DEV}-00000001")])
    w.stop()
    w.join(10)
    conn = db.connect(dbp)
    # the alarm is in another process's hands (claimed: due later); the cancel must wait for it
    conn.execute("UPDATE deliveries SET next_at=2000 WHERE event_id=?", (f"{DEV}-00000001",))
    sink = ScriptedSink([])
    wk = DeliveryWorker(sink, dbp, Registry(dbp), acked=False, on_stage=lambda *a: None,
                        policy=DeliveryPolicy(jitter=0.0), clock=Clock(1050.0), claim_s=20.0)
    wk.conn = db.connect(dbp, durable=False)
    assert wk.pump() == 0 and sink.reports == []
    row = conn.execute("SELECT state, next_at FROM deliveries WHERE event_id=?", (f"{DEV}-00000002",)).fetchone()
    assert (row["state"], row["next_at"]) == ("pending", 1002.0)  # due again at once, not leased away


# --- two real bridge processes -------------------------------------------------------------------------

@pytest.fixture
def fleet() -> Fleet:
    return Fleet(6, prefix="hn-s")


def test_two_bridges_on_a_shared_subscription_store_and_deliver_each_alarm_once(tmp_path, fleet, broker, intake):
    shared_db = tmp_path / "shared.db"
    fleet.register(shared_db)
    bridges, ports = [], []
    for name in ("a", "b"):
        wd = tmp_path / f"bridge-{name}"
        wd.mkdir()
        port = free_port()
        bp = bridge_for(wd, broker, intake, bridge_id=f"shared-{name}", db=str(shared_db),
                        mqtt={"shared_group": "baochay-bridges"}, metrics={"host": "127.0.0.1", "port": port})
        bridges.append(bp)
        ports.append(port)
    try:
        for bp in bridges:
            bp.start()
        devices = [fleet.sim(d, broker).connect() for d in fleet.devices]
        sent = []
        for _ in range(8):  # each device fires its events back to back: the two bridges see them interleaved
            for d in devices:
                sent.append((d, d.alarm()))
        for d, eid in sent:
            d.wait_stage(eid, "accepted", timeout=30)
        for d, eid in sent:
            stages = [a["stage"] for a in d.acks(eid)]
            assert "stored" in stages and stages.count("accepted") >= 1
            assert len(intake.posts_for(eid)) == 1, f"{eid} posted {len(intake.posts_for(eid))} times"
        conn = db.connect(shared_db)
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == len(sent)
        assert conn.execute("SELECT COUNT(*) FROM deliveries WHERE state='accepted'").fetchone()[0] == len(sent)
        assert conn.execute("SELECT COALESCE(SUM(n), 0) FROM rejects").fetchone()[0] == 0
        stored = [metric(p, "baochay_stored_total") for p in ports]
        assert sum(stored) == len(sent) and all(n > 0 for n in stored), stored  # both carried load
        for d in devices:
            d.close()
    finally:
        for bp in bridges:
            bp.stop()

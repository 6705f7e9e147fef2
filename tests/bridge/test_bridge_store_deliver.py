"""Store writer and delivery workers in process, against a real SQLite file and in-test sinks."""

from __future__ import annotations

import json
import threading

import pytest
from test_bridge_stages import DEV, KEY, body, signed

from bridge import db
from bridge.registry import Registry
from bridge.report import Outcome
from bridge.stages.deliver import DeliveryPolicy
from bridge.stages.parse import parse_event, split_frame
from bridge.workers.delivery import DeliveryWorker
from bridge.workers.store_writer import Incoming, StoreWriter
from firmware import protocol


def incoming(ctr: int, **over) -> Incoming:
    over.setdefault("id", protocol.event_id(DEV, ctr, over.get("ep")))
    b = body(ctr=ctr, **over)
    frame = split_frame(protocol.topic(DEV, "event"), signed(b))
    return Incoming(frame, parse_event(frame.body), 1000.0 + ctr)


@pytest.fixture
def dbp(tmp_path):
    p = tmp_path / "b.db"
    Registry(p).upsert({"id": DEV, "key": KEY.hex(), "building": "Toa nha A", "lat": 21.0, "lon": 105.8})
    return p


class Results:
    def __init__(self):
        self.items = []
        self.done = threading.Event()

    def __call__(self, r):
        self.items.append(r)
        self.done.set()


def store_all(dbp, items, sinks=("s",)):
    res = Results()
    settled = []
    w = StoreWriter(dbp, list(sinks), res, building_of=lambda dev: "Toa nha A")
    for it in items:
        it.settle = lambda it=it: settled.append(it.event["id"])
        w.submit_event(it)
    w.start()
    w.stop()
    w.join(10)
    return res.items, settled


def test_new_duplicate_late_and_conflict_in_one_batch(dbp):
    items = [incoming(5), incoming(5), incoming(3), incoming(6), incoming(6, cause="heat", type="alarm")]
    results, settled = store_all(dbp, items)
    assert [r.verdict for r in results] == ["new", "duplicate", "late", "new", "conflict"]
    assert settled == [f"{DEV}-00000005", f"{DEV}-00000005", f"{DEV}-00000003", f"{DEV}-00000006",
                       f"{DEV}-00000006"]
    conn = db.connect(dbp)
    rows = [dict(r) for r in conn.execute("SELECT id, late FROM events ORDER BY seq")]
    assert [r["id"] for r in rows] == [f"{DEV}-00000005", f"{DEV}-00000003", f"{DEV}-00000006"]
    assert rows[0]["late"] is None and "counter 3 arrived after 5" in rows[1]["late"]
    assert results[2].late == rows[1]["late"]
    assert conn.execute("SELECT COUNT(*) FROM deliveries WHERE sink='s'").fetchone()[0] == 3  # late goes out
    assert conn.execute("SELECT n FROM rejects WHERE reason='conflict'").fetchone()[0] == 1
    # after a restart the writer still knows the highest counter from the database
    results, _ = store_all(dbp, [incoming(4), incoming(6), incoming(7)])
    assert [r.verdict for r in results] == ["late", "duplicate", "new"]


def test_a_new_install_starts_its_own_counter_and_is_noted(dbp):
    """A re-flashed device (new epoch) counts from 1 again: its events are new, not replays."""
    first = [incoming(c, ep="0badcafe") for c in (1, 2, 3)]
    results, _ = store_all(dbp, first)
    assert [r.verdict for r in results] == ["new"] * 3
    assert [r.new_epoch for r in results] == [None] * 3  # the device's first install: nothing to note
    again = [incoming(c, ep="5eed0001") for c in (1, 2)]
    results, _ = store_all(dbp, again)
    assert [r.verdict for r in results] == ["new", "new"]
    assert [r.new_epoch for r in results] == ["0badcafe", None]
    conn = db.connect(dbp)
    st = conn.execute("SELECT epoch, epoch_at FROM device_state WHERE id=?", (DEV,)).fetchone()
    assert st["epoch"] == "5eed0001" and st["epoch_at"] == 1001.0
    assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 5
    # the old install's frames are still only duplicates of what is stored
    results, _ = store_all(dbp, [first[2]])
    assert [r.verdict for r in results] == ["duplicate"]


def test_firmware_before_epochs_then_a_new_install(dbp):
    results, _ = store_all(dbp, [incoming(7)])  # no epoch: <dev>-<ctr>
    assert results[0].verdict == "new"
    results, _ = store_all(dbp, [incoming(1, ep="abcdef01")])
    assert results[0].verdict == "new" and results[0].new_epoch == ""


def test_a_database_made_before_epochs_gets_the_new_columns(tmp_path):
    import sqlite3

    p = tmp_path / "old.db"
    old = sqlite3.connect(p)
    old.executescript("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
                      " dev TEXT NOT NULL, ctr INTEGER NOT NULL, type TEXT NOT NULL, cause TEXT NOT NULL, ref TEXT,"
                      " incident_key TEXT NOT NULL, building TEXT NOT NULL DEFAULT '', body BLOB NOT NULL,"
                      " received_at REAL NOT NULL, stage TEXT NOT NULL DEFAULT 'stored', stage_at REAL,"
                      " incident TEXT, reason TEXT);"
                      "INSERT INTO events (id, dev, ctr, type, cause, incident_key, body, received_at)"
                      " VALUES ('d-00000001', 'd', 1, 'alarm', 'button', 'd-00000001', x'7b7d', 1.0);")
    old.close()
    conn = db.connect(p)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    assert {"ep", "late"} <= cols
    assert tuple(conn.execute("SELECT ep, late FROM events").fetchone()) == ("", None)
    db.connect(p).close()  # a second open finds them there


def test_fault_event_opens_an_operator_fault_and_restore_clears_it(dbp):
    store_all(dbp, [incoming(1, type="fault", cause="sensor", data={"detail": "BME680 missing"})])
    conn = db.connect(dbp)
    f = conn.execute("SELECT * FROM faults WHERE open=1").fetchone()
    assert f["kind"] == "device:sensor" and "BME680 missing" in f["reason"]
    store_all(dbp, [incoming(2, type="restore", cause="sensor", ref=f"{DEV}-00000001")])
    assert conn.execute("SELECT COUNT(*) FROM faults WHERE open=1").fetchone()[0] == 0


def test_events_a_sink_does_not_want_are_never_queued_for_it(dbp):
    from bridge.sinks.intake_json import IntakeJsonSink

    class Everything:
        name = "arc"

    intake = IntakeJsonSink("intake114", url="http://127.0.0.1:9/")
    store_all(dbp, [incoming(1, type="fault", cause="sensor", data={"detail": "x"}),
                    incoming(2, type="alarm", cause="heat"),
                    incoming(3, type="restore", cause="sensor", ref=f"{DEV}-00000001"),
                    incoming(4, type="restore", cause="heat", ref=f"{DEV}-00000002")], sinks=(intake, Everything()))
    conn = db.connect(dbp)
    queued = {(r["sink"], r["event_id"][-1]) for r in conn.execute("SELECT sink, event_id FROM deliveries")}
    assert queued == {("arc", "1"), ("arc", "2"), ("arc", "3"), ("arc", "4"), ("intake114", "2"), ("intake114", "4")}


class ScriptedSink:
    def __init__(self, outcomes):
        self.name = "s"
        self.outcomes = list(outcomes)
        self.reports = []

    def send(self, report):
        self.reports.append(report)
        out = self.outcomes.pop(0) if self.outcomes else Outcome.accepted("INC-1")
        if isinstance(out, Exception):
            raise out
        return out

    def close(self):
        pass


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def worker(dbp, sink, clock, **policy):
    stages = []
    w = DeliveryWorker(sink, dbp, Registry(dbp), acked=True,
                       on_stage=lambda dev, eid, st, inc, why: stages.append((eid, st, inc, why)),
                       policy=DeliveryPolicy(**{"jitter": 0.0, **policy}), clock=clock)
    w.conn = db.connect(dbp, durable=False)
    return w, stages


def test_retry_with_backoff_then_accept(dbp):
    store_all(dbp, [incoming(1)])
    sink = ScriptedSink([Outcome.retry("HTTP 503"), ConnectionError("reset"), Outcome.accepted("INC-9")])
    clock = Clock(1001.0)
    w, stages = worker(dbp, sink, clock, backoff_initial_s=1.0)
    assert w.pump() == 1
    assert stages == [(f"{DEV}-00000001", "forwarded", None, None)]
    assert w.pump() == 0  # not due before its backoff
    clock.t += 1.0
    assert w.pump() == 1  # second attempt raises: still a retry, with a doubled backoff
    clock.t += 1.5
    assert w.pump() == 0
    clock.t += 0.6
    assert w.pump() == 1
    assert stages[-1] == (f"{DEV}-00000001", "accepted", "INC-9", None)
    assert len(sink.reports) == 3 and w.backlog() == 0


def _open_delivery_faults(conn):
    return [dict(r) for r in conn.execute("SELECT * FROM faults WHERE kind='delivery' AND open=1")]


def test_refused_fails_at_once_with_a_fault_and_is_tried_again(dbp):
    store_all(dbp, [incoming(1)])
    sink = ScriptedSink([Outcome.refused("schema error"), Outcome.accepted("INC-7")])
    clock = Clock(1001.0)
    w, stages = worker(dbp, sink, clock, backoff_initial_s=1.0)
    w.pump()
    assert stages[-1][1] == "failed" and "schema error" in stages[-1][3]
    [f] = _open_delivery_faults(w.conn)
    assert f["sink"] == "s" and "schema error" in f["reason"] and f["event"] == f"{DEV}-00000001"
    assert w.backlog() == 1  # not given up: the sink may be mended
    clock.t += 2.1
    w.pump()
    assert stages[-1] == (f"{DEV}-00000001", "accepted", "INC-7", None)
    assert _open_delivery_faults(w.conn) == []


def test_failed_is_not_final_a_late_acceptance_reaches_the_device_and_clears_the_fault(dbp):
    """EN 54-21: no acceptance within 100 s -> the device is told `failed` (the occupant calls 114) and
    the operator gets a fault; sending goes on, at most a minute apart, and when 114 takes it at last
    the device hears `accepted` with the incident id and the fault closes."""
    store_all(dbp, [incoming(1)])  # received at 1001
    sink = ScriptedSink([Outcome.retry("timeout")] * 12 + [Outcome.accepted("INC-LATE")])
    clock = Clock(1001.0)
    w, stages = worker(dbp, sink, clock, max_age_s=100, backoff_initial_s=30, backoff_max_s=60,
                       late_backoff_max_s=60)
    sent_at = []
    while not stages or stages[-1][1] != "accepted":
        n = len(sink.reports)
        w.pump()
        if len(sink.reports) > n:
            sent_at.append(clock.t)
        if [s for s in stages if s[1] == "failed"] and clock.t < 1200:
            assert [f["event"] for f in _open_delivery_faults(w.conn)] == [f"{DEV}-00000001"]
        clock.t += 5
        assert clock.t < 3000, "never accepted"
    failed = [s for s in stages if s[1] == "failed"]
    assert len(failed) == 1 and "within 100 s" in failed[0][3] and "timeout" in failed[0][3]
    assert sent_at[:3] == [1001.0, 1031.0, 1091.0]  # before the deadline: 30, then 60 s apart, capped at 1101
    # after it never more than a minute apart (plus the 5 s step of this loop)
    assert all(b - a <= 65 for a, b in zip(sent_at, sent_at[1:], strict=False))
    assert stages[-1] == (f"{DEV}-00000001", "accepted", "INC-LATE", None)
    assert _open_delivery_faults(w.conn) == [] and w.backlog() == 0
    row = w.conn.execute("SELECT state, failed_at FROM deliveries").fetchone()
    assert row["state"] == "accepted" and row["failed_at"] is not None


def test_gives_up_at_the_horizon_and_says_so(dbp):
    store_all(dbp, [incoming(1)])
    sink = ScriptedSink([Outcome.retry("HTTP 503")] * 1000)
    clock = Clock(1001.0)
    w, stages = worker(dbp, sink, clock, max_age_s=100, horizon_s=3600, late_backoff_max_s=600)
    while w.backlog():
        w.pump()
        clock.t += 60
        assert clock.t < 10000
    assert 4601 <= clock.t <= 4801  # the horizon, an hour after receipt
    [f] = _open_delivery_faults(w.conn)
    assert "gave up" in f["reason"] and "1 h" in f["reason"] and "HTTP 503" in f["reason"]
    assert [s[1] for s in stages].count("failed") == 1  # the device was told once, at 100 s
    assert w.conn.execute("SELECT state FROM deliveries").fetchone()[0] == "failed"


def test_an_operator_closes_an_alarm_the_114_side_never_took(dbp):
    from bridge.alarms import CloseError, close, undelivered

    store_all(dbp, [incoming(1), incoming(2)])
    sink = ScriptedSink([Outcome.refused("HTTP 422")] * 10)
    clock = Clock(1003.0)
    w, stages = worker(dbp, sink, clock)
    w.pump()
    assert len(_open_delivery_faults(w.conn)) == 2
    eid = f"{DEV}-00000001"
    for bad, said in (("", "say why"), ("x" * 301, "at most 300"), ):
        with pytest.raises(CloseError, match=said):
            close(w.conn, eid, bad)
    with pytest.raises(CloseError, match="no event"):
        close(w.conn, f"{DEV}-00000099", "called 114")
    assert close(w.conn, eid, "  called 114 by phone   at 10:42 ") == ["s"]
    with pytest.raises(CloseError, match="nothing to close"):
        close(w.conn, eid, "again")
    assert [f["event"] for f in _open_delivery_faults(w.conn)] == [f"{DEV}-00000002"]
    listed = {r["event_id"]: r for r in undelivered(w.conn)}
    assert listed[eid]["state"] == "closed" and listed[eid]["closed_why"] == "called 114 by phone at 10:42"
    n = len(sink.reports)
    clock.t += 120
    w.pump()
    assert [r.event_id for r in sink.reports[n:]] == [f"{DEV}-00000002"]  # the closed one is not sent


def test_a_cancel_is_not_held_behind_its_failed_alarm(dbp):
    store_all(dbp, [incoming(1)])
    sink = ScriptedSink([Outcome.refused("HTTP 422"), Outcome.accepted("INC-C")])
    clock = Clock(1001.0)
    w, stages = worker(dbp, sink, clock, late_backoff_max_s=600, backoff_initial_s=300)
    w.pump()  # the alarm fails; it is tried again minutes later
    store_all(dbp, [incoming(2, type="cancel", cause="button", ref=f"{DEV}-00000001")])
    clock.t += 1.5
    w.pump()
    assert [r.event_id for r in sink.reports] == [f"{DEV}-00000001", f"{DEV}-00000002"]


def test_update_waits_for_its_incident_and_carries_the_incident_id(dbp):
    store_all(dbp, [incoming(1)])
    sink = ScriptedSink([Outcome.retry("busy"), Outcome.accepted("INC-42"), Outcome.accepted("INC-42")])
    clock = Clock(1003.0)
    w, stages = worker(dbp, sink, clock, backoff_initial_s=1.0)
    w.pump()
    store_all(dbp, [incoming(2, type="cancel", ref=f"{DEV}-00000001")])
    w.pump()
    assert [r.event_id for r in sink.reports] == [f"{DEV}-00000001"]  # the cancel waited
    clock.t += 2
    w.pump()
    alarm, cancel = sink.reports[1], sink.reports[2]
    assert cancel.references == alarm.event_id and cancel.incident_id == "INC-42"
    assert cancel.incident_key == alarm.event_id
    # the retried alarm was rebuilt after the cancel arrived: lower confidence, and says why
    assert alarm.confidence < sink.reports[0].confidence and any("cancelled" in r for r in alarm.reasons)


def test_fan_out_only_the_chosen_sink_drives_device_acks(dbp):
    store_all(dbp, [incoming(1)], sinks=("s", "t"))
    conn = db.connect(dbp)
    assert {r["sink"] for r in conn.execute("SELECT sink FROM deliveries")} == {"s", "t"}
    other = ScriptedSink([Outcome.accepted("CAP-1")])
    other.name = "t"
    stages = []
    w = DeliveryWorker(other, dbp, Registry(dbp), acked=False, on_stage=lambda *a: stages.append(a),
                       clock=Clock(1001.0))
    w.conn = db.connect(dbp, durable=False)
    w.pump()
    assert stages == [] and len(other.reports) == 1
    row = conn.execute("SELECT state, ref FROM deliveries WHERE sink='t'").fetchone()
    assert (row["state"], row["ref"]) == ("accepted", "CAP-1")
    assert json.loads(conn.execute("SELECT body FROM events").fetchone()[0])["dev"] == DEV


def test_an_at_once_acceptance_goes_straight_from_stored_to_accepted(dbp):
    store_all(dbp, [incoming(1)])
    w, stages = worker(dbp, ScriptedSink([Outcome.accepted("INC-7")]), Clock(1001.0))
    assert w.pump() == 1
    # `forwarded` is skipped: `accepted` was known before it would have been sent (protocol section 7)
    assert stages == [(f"{DEV}-00000001", "accepted", "INC-7", None)]


def test_several_workers_share_a_sink_and_keep_each_incident_in_order(dbp):
    alarm = f"{DEV}-00000001"
    store_all(dbp, [incoming(1), incoming(2, type="cancel", ref=alarm)] + [incoming(c) for c in range(3, 13)])
    sinks = [ScriptedSink([]), ScriptedSink([])]
    workers = []
    for i, sink in enumerate(sinks):
        w = DeliveryWorker(sink, dbp, Registry(dbp), acked=False, on_stage=lambda *a: None,
                           policy=DeliveryPolicy(jitter=0.0), clock=Clock(1020.0), part=(i, 2))
        w.conn = db.connect(dbp, durable=False)
        workers.append(w)
    for _ in range(3):
        for w in workers:
            w.pump()
    sent = [r.event_id for s in sinks for r in s.reports]
    assert sorted(sent) == [f"{DEV}-{c:08d}" for c in range(1, 13)]  # each exactly once
    assert all(s.reports for s in sinks)  # both workers took a share
    owner = next(s for s in sinks if any(r.event_id == alarm for r in s.reports))
    ids = [r.event_id for r in owner.reports]
    assert ids.index(alarm) < ids.index(f"{DEV}-00000002")  # the cancel did not overtake its alarm
    assert owner.reports[ids.index(f"{DEV}-00000002")].incident_id == "INC-1"


def test_batched_verify_context_equals_the_per_event_one(dbp):
    from bridge.stages.verify import VerifyPolicy
    from bridge.workers.delivery import gather_contexts

    other = "hn-a-0002"
    Registry(dbp).upsert({"id": other, "key": KEY.hex(), "building": "Toa nha A"})
    b = body(ctr=1, id=f"{other}-00000001", dev=other, cause="heat", data={"t": 60})
    frame = split_frame(protocol.topic(other, "event"), signed(b))
    items = [incoming(1, type="fault", cause="sensor", data={"detail": "x"}), incoming(2, cause="heat"),
             Incoming(frame, parse_event(frame.body), 1010.0), incoming(3, cause="smoke"),
             incoming(4, type="cancel", ref=f"{DEV}-00000003"), incoming(500, cause="heat")]
    store_all(dbp, items)
    conn = db.connect(dbp, durable=False)
    rows = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    policy = VerifyPolicy(window_s=100)
    batched = gather_contexts(conn, rows, lambda dev: "Toa nha A", policy)
    for r in rows:
        assert batched[r["id"]] == gather_contexts(conn, [r], lambda dev: "Toa nha A", policy)[r["id"]], r["id"]
    assert batched[f"{DEV}-00000002"].corroborating == [other]
    assert batched[f"{DEV}-00000003"].cancelled_by == f"{DEV}-00000004"
    assert batched[f"{DEV}-00000500"].corroborating == []  # outside the window

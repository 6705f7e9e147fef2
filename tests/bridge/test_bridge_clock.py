"""A step of the system clock, an hour either way: no fresh alarm fails for it, no retry or presence
judgement freezes for it. The store writer, a delivery worker and the supervision ticker run in
process on a real database; the wall and monotonic clocks are the test's."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from bridge_harness import wait_for
from test_bridge_store_deliver import DEV, KEY, ScriptedSink, incoming

from bridge import db
from bridge.clock import BridgeClock, move_stored_times, record_offset
from bridge.registry import Registry
from bridge.report import Outcome
from bridge.stages.deliver import DeliveryPolicy
from bridge.workers.delivery import DeliveryWorker
from bridge.workers.store_writer import StoreWriter
from bridge.workers.supervision import Presence, Ticker


@pytest.fixture
def dbp(tmp_path):
    p = tmp_path / "b.db"
    Registry(p).upsert({"id": DEV, "key": KEY.hex(), "building": "Toa nha A", "lat": 21.0, "lon": 105.8})
    return p


class Clocks:
    """A wall clock and a monotonic clock the test moves: `tick` moves both, `step` the wall only."""

    def __init__(self) -> None:
        self.wall_t, self.mono_t = 1_800_000_000.0, 5_000.0

    def wall(self) -> float:
        return self.wall_t

    def mono(self) -> float:
        return self.mono_t

    def tick(self, s: float) -> None:
        self.wall_t += s
        self.mono_t += s

    def step(self, s: float) -> None:
        self.wall_t += s


def test_the_clock_moves_with_the_monotonic_clock_and_takes_in_drift():
    c = Clocks()
    clock = BridgeClock(c.wall, c.mono)
    t0 = clock()
    assert t0 == c.wall_t
    c.tick(10)
    assert clock() == t0 + 10
    c.step(0.4)  # drift, or a slew: taken in, not a step
    assert clock.pending_step() == 0.0 and abs(clock() - c.wall_t) < 1e-6
    c.step(3600)
    assert abs(clock.pending_step() - 3600) < 1e-6
    assert abs(clock() - (c.wall_t - 3600)) < 1e-6  # not followed until told
    clock.follow(3600)
    assert abs(clock() - c.wall_t) < 1e-6 and clock.pending_step() == 0.0


@dataclass
class Dev:
    id: str
    supervision: str = "mains"


def _system(dbp, sink, clocks):
    clock = BridgeClock(clocks.wall, clocks.mono)
    writer = StoreWriter(dbp, ["s"], lambda r: None)
    writer.start()
    writer.started_ok.wait(10)
    writer.submit(lambda conn: record_offset(conn, clock.base))
    stages: list = []
    worker = DeliveryWorker(sink, dbp, Registry(dbp), acked=True,
                            on_stage=lambda dev, eid, st, inc, why: stages.append((eid, st)),
                            policy=DeliveryPolicy(jitter=0.0, backoff_initial_s=5.0, backoff_max_s=5.0), clock=clock)
    worker.conn = db.connect(dbp, durable=False)
    presence = Presence({"mains": 20.0}, started_at=clock())
    ticker = Ticker({}, "b", "t", registry=None, presence=presence, writer=writer, metrics=None, conn=None,
                    backlogs={}, counts={}, publish=None, shared=False, stopping=threading.Event(), clock=clock)
    return clock, writer, worker, stages, presence, ticker


def _store(writer, item, clock):
    item.received_at = clock()
    done = threading.Event()
    writer.on_result = lambda r: done.set()
    writer.submit_event(item)
    assert done.wait(10)


def _follow(ticker, clock, wanted):
    before = clock.base
    ticker.follow_clock_step()
    wait_for(lambda: abs(clock.base - (before + wanted)) < 1e-6, timeout=10)


def test_a_step_forward_fails_no_fresh_alarm_and_moves_the_deadline_with_it(dbp):
    clocks = Clocks()
    sink = ScriptedSink([Outcome.retry("HTTP 503")] * 100)
    clock, writer, worker, stages, presence, ticker = _system(dbp, sink, clocks)
    try:
        _store(writer, incoming(1), clock)
        presence.seen(DEV, clock())
        worker.pump()  # first attempt: forwarded
        clocks.tick(10)
        clocks.step(3600)  # NTP sets the clock an hour on
        worker.pump()  # before the ticker notices: the bridge's clock did not jump
        _follow(ticker, clock, 3600)
        clocks.tick(5)
        worker.pump()  # after: the stored deadline moved with the clock
        assert [s for _, s in stages] == ["forwarded"], stages
        assert presence.sweep([Dev(DEV)], clock()) == []  # 15 s of real silence: still online
        clocks.tick(90)  # 105 s after receipt in real time: now it has failed, and only now
        worker.pump()
        worker.pump()
        assert [s for _, s in stages] == ["forwarded", "failed"]
    finally:
        writer.stop()
        writer.join(10)


def test_a_step_back_freezes_no_retry_and_no_presence_judgement(dbp):
    clocks = Clocks()
    sink = ScriptedSink([Outcome.retry("HTTP 503"), Outcome.retry("HTTP 503"), Outcome.accepted("INC-1")])
    clock, writer, worker, stages, presence, ticker = _system(dbp, sink, clocks)
    try:
        _store(writer, incoming(1), clock)
        presence.seen(DEV, clock())
        worker.pump()
        clocks.step(-3600)  # the clock set an hour back
        _follow(ticker, clock, -3600)
        clocks.tick(5.1)  # the 5 s backoff, in real time
        worker.pump()
        assert len(sink.reports) == 2  # sent again after 5 s, not after an hour and 5 s
        clocks.tick(5.1)
        worker.pump()
        assert stages[-1] == (f"{DEV}-00000001", "accepted")
        clocks.tick(25)  # 35 s of real silence: the device is judged offline now, not an hour later
        [t] = presence.sweep([Dev(DEV)], clock())
        assert not t.online and "silent for 35 s" in t.reason
        row = worker.conn.execute("SELECT created_at FROM deliveries").fetchone()
        assert abs(row["created_at"] - (clocks.wall_t - 35.2)) < 1  # stored in the new wall clock's terms
    finally:
        writer.stop()
        writer.join(10)


def test_two_bridges_on_one_database_move_the_stored_times_once(dbp):
    conn = db.connect(dbp)
    conn.execute("INSERT INTO deliveries (sink, event_id, seq, created_at, next_at) VALUES ('s', 'e', 1, 100, 105)")
    record_offset(conn, 1000.0)
    assert move_stored_times(conn, 4600.0) == 3600.0  # the first bridge to notice moves them
    assert move_stored_times(conn, 4600.0) == 0.0  # the second finds them moved
    assert tuple(conn.execute("SELECT created_at, next_at FROM deliveries").fetchone()) == (3700.0, 3705.0)

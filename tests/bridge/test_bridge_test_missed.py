"""The periodic test signal and its absence: a device that sent a test and then no more within its
period and grace gets the `test-missed` fault (faults table, `status`, the health topic, the metrics);
its next test clears it. A real bridge process and a real broker, with periods of seconds. Devices
that never sent a test are not watched."""

from __future__ import annotations

import json
import threading

from bridge_harness import metric, wait_for

from bridge import db
from bridge.clock import BridgeClock, record_offset
from bridge.workers.store_writer import StoreWriter
from bridge.workers.test_watch import TestWatch
from firmware import protocol_host
from stack.observer import Observer
from stack.ports import free_port

FAST = {"mains_s": 60, "battery_s": 90000, "check_s": 0.2, "low_battery_pct": 20,
        "test_s": 1.5, "test_grace_s": 1.0}


def _faults(bridge, kind="test-missed"):
    return [f for f in bridge.status()["faults"] if f["kind"] == kind]


def test_a_missed_periodic_test_raises_test_missed_and_the_next_test_clears_it(fleet, broker, make_bridge):
    port = free_port()
    health = Observer(broker.host, broker.port, "bridge", "bridge-pw",
                      topics=[protocol_host.bridge_topic("test", "health")], name="health")
    try:
        bridge = make_bridge(supervision=FAST, metrics={"host": "127.0.0.1", "port": port}, health_s=0.5).start()
        tested = fleet.sim("hn-t-0001", broker).connect()
        quiet = fleet.sim("hn-t-0002", broker).connect()  # never sends a test: not watched
        first = tested.send("test", "selftest")
        tested.wait_stage(first, "accepted")
        quiet.wait_stage(quiet.alarm(), "accepted")

        # 1.5 s period + 1 s grace after the last test (and after the bridge's start): the fault, naming it
        [fault] = wait_for(lambda: _faults(bridge), timeout=15, step=0.2)
        assert fault["device"] == "hn-t-0001" and "no periodic test for" in fault["reason"]
        assert "mains expects one every" in fault["reason"]
        out = bridge.cli("status").stdout
        assert "test-missed" in out and "hn-t-0001" in out
        wait_for(lambda: metric(port, "baochay_tests_missed") == 1, timeout=10)
        mark = health.mark()
        seen = health.wait(lambda m: json.loads(m.payload).get("tests_missed") == 1, timeout=10, since=mark)
        assert json.loads(seen.payload)["faults_open"] >= 1
        assert "device missed its periodic test" in bridge.log_path.read_text()

        # the next test clears it, at once (the store writer, with the event)
        again = tested.send("test", "selftest")
        tested.wait_stage(again, "accepted")
        wait_for(lambda: not _faults(bridge), timeout=10, step=0.1)
        wait_for(lambda: metric(port, "baochay_tests_missed") == 0, timeout=10)
        assert all(f["device"] != "hn-t-0002" for f in bridge.status()["faults"])
        # a device that tested is listed with its last test; one that never did, as never
        devices = {d["id"]: d for d in bridge.status()["devices"]}
        assert devices["hn-t-0001"]["last_test"] is not None and devices["hn-t-0002"]["last_test"] is None
    finally:
        health.close()


def test_the_period_is_per_class_and_0_turns_the_watch_off(fleet, broker, make_bridge):
    """test_s 0 (off) for every class but battery, which has its own period: only the battery device
    that tested is judged; the mains device that tested at the same time is not."""
    from bridge.registry import Registry

    bridge = make_bridge(supervision={**FAST, "test_s": 0, "test_s_by_class": {"battery": 1.5}})
    reg = Registry(bridge.db)
    reg.upsert({**reg.get("hn-t-0003").public(), "key": fleet.devices["hn-t-0003"][1], "supervision": "battery"})
    reg.close()
    bridge.start()
    mains = fleet.sim("hn-t-0001", broker).connect()
    battery = fleet.sim("hn-t-0003", broker).connect()
    for dev in (mains, battery):
        dev.wait_stage(dev.send("test", "selftest"), "accepted")
    [fault] = wait_for(lambda: _faults(bridge), timeout=15, step=0.2)
    assert fault["device"] == "hn-t-0003" and "battery expects one every" in fault["reason"]
    assert [f["device"] for f in _faults(bridge)] == ["hn-t-0003"]


def test_a_step_of_the_wall_clock_neither_raises_nor_hides_it(tmp_path):
    """In process, on the test's clocks, followed as the supervision ticker follows a step (stored
    times moved, then the bridge clock): an hour's step forward raises nothing; real time past the
    period and grace raises it; an hour's step back does not hide it."""
    from test_bridge_clock import Clocks

    from bridge.clock import move_stored_times
    from bridge.registry import Registry

    dbp = tmp_path / "b.db"
    Registry(dbp).upsert({"id": "hn-t-0001", "key": "ab" * 32, "building": "Toa nha A"})
    c = Clocks()
    clock = BridgeClock(c.wall, c.mono)
    writer = StoreWriter(dbp, [], lambda r: None)
    writer.start()
    writer.started_ok.wait(10)
    conn = db.connect(dbp, durable=False)

    def committed(job) -> None:
        done = threading.Event()
        writer.submit(lambda cn: (job(cn), done.set)[1])  # what a job returns runs after its commit
        assert done.wait(10)

    try:
        floor = [clock()]
        committed(lambda cn: (record_offset(cn, clock.base), writer._test_received(cn, "hn-t-0001", clock())))
        watch = TestWatch({"test_s": 100, "test_grace_s": 10}, writer)

        def step(d: float) -> None:
            c.step(d)
            pending = clock.pending_step()
            committed(lambda cn: move_stored_times(cn, clock.base + pending))
            floor[0] += pending
            clock.follow(pending)

        def judged() -> list:
            watch.tick(conn, clock(), floor[0])
            committed(lambda cn: None)
            return [r["device"] for r in conn.execute("SELECT device FROM faults WHERE open=1")]

        c.tick(50)
        step(3600)  # NTP sets the wall clock an hour on: 50 s of real time since the test, not 3650
        assert judged() == []
        c.tick(61)  # 111 s of real time since the test: past 100 s + 10 s
        assert judged() == ["hn-t-0001"]
        step(-3600)  # back: still 111 s, still missed
        assert judged() == ["hn-t-0001"]
        committed(lambda cn: writer._test_received(cn, "hn-t-0001", clock()))
        assert judged() == []
    finally:
        writer.stop()
        writer.join(10)
        conn.close()

"""Outages: a broker outage, a reset and a power cut between the press and its delivery. Nothing is
lost, nothing arrives twice, and the order holds (the flash outbox, docs/protocol.md section 4)."""

from __future__ import annotations

import pytest

from firmware import protocol_host as protocol
from hil_tests.harness.flows import DELIVERY_TIMEOUT_S, incidents_of, press_alarm, wait_ack, wait_until


def test_presses_during_broker_outage_arrive_once_and_in_order(board, bench, observer, intake):
    if bench.broker is None:
        pytest.skip("the broker was not started by the suite (--broker given), so it cannot be stopped")
    dut = board.dut
    since, seen = dut.mark(), observer.mark()
    before = len(incidents_of(intake, board.dev))
    bench.broker.stop()
    try:
        dut.expect("mqtt", 30, since=since, state="down")
        first, _ = press_alarm(board)
        board.rig.hold(board.cfg["hold_cancel_ms"] + 800)  # cancel it: the next press is a new alarm
        cancel = dut.expect("event", 10, since=since, type="cancel")
        second, _ = press_alarm(board)
        assert dut.cmd("outbox")["ids"] == [first["id"], cancel["id"], second["id"]]
        assert not dut.find("sent", since=since), "nothing can be sent while the broker is down"
    finally:
        bench.broker.start()
    wanted = [first["id"], cancel["id"], second["id"]]
    for eid in wanted:
        wait_ack(board, eid, "stored", since)
    wait_ack(board, second["id"], "accepted", since)
    topic = protocol.topic(board.dev, "event")
    observer.wait(lambda m: m[1] == topic and f'"id":"{second["id"]}"'.encode() in m[2], DELIVERY_TIMEOUT_S, since=seen)
    ids = [b["id"] for b in observer.bodies(topic, since=seen)]
    assert ids == wanted, f"published {ids}"
    assert [m["id"] for m in dut.find("sent", since=since)] == wanted
    # at the 114 intake: one incident per alarm, the first cancelled
    new = wait_until(lambda: (lambda n: n if len(n) >= before + 2 else None)(incidents_of(intake, board.dev)),
                     DELIVERY_TIMEOUT_S, what="two new incidents")
    assert len(new) == before + 2
    assert dut.cmd("outbox")["ids"] == []


def _undelivered_alarm_survives(board, intake, restart) -> None:
    dut = board.dut
    since = dut.mark()
    before = {i["incident_id"] for i in incidents_of(intake, board.dev)}
    board.rig.network_down()
    try:
        dut.expect("mqtt", 30, since=since, state="down")
        ev, _ = press_alarm(board)
        assert dut.cmd("outbox")["ids"] == [ev["id"]]
        boot_before = dut.cmd("status")["boot"]
        boot = restart()
        assert boot["boot"] == boot_before + 1
    finally:
        board.rig.network_up()
    accepted = wait_ack(board, ev["id"], "accepted", since)
    assert [m["id"] for m in dut.find("sent", since=since)] == [ev["id"]]
    assert [m["id"] for m in dut.find("event", since=since)] == [ev["id"]], "the restart raised no new event"
    assert intake.incident(accepted["incident"])["device_id"] == board.dev
    new = {i["incident_id"] for i in incidents_of(intake, board.dev)} - before
    assert new == {accepted["incident"]}, "delivered to the intake exactly once"
    assert dut.cmd("outbox")["ids"] == []


def test_reset_before_delivery_delivers_after_boot_exactly_once(board, intake):
    _undelivered_alarm_survives(board, intake, board.rig.reset)


def test_power_cut_before_delivery_delivers_after_boot_exactly_once(board, intake):
    _undelivered_alarm_survives(board, intake, board.rig.power_cut)

"""Soak (opt in: -m soak): many alarms over many minutes, each pressed, followed to the 114 intake and
cancelled by a long hold. Nothing is lost and the heap stays flat. BAOCHAY_HIL_SOAK_ALARMS sets how
many (default 60, about five minutes on a virtual board)."""

from __future__ import annotations

import os

import pytest

from hil_tests.harness.flows import DELIVERY_TIMEOUT_S, follow_alarm, press_alarm, wait_until

HEAP_DRIFT_BUDGET = 8 * 1024  # bytes the live heap may grow over the run before it counts as a leak


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_many_alarms_nothing_lost_heap_stable(board, results):
    n = int(os.environ.get("BAOCHAY_HIL_SOAK_ALARMS", "60"))
    dut = board.dut
    since = dut.mark()
    alarms, heap = [], []
    for i in range(n):
        mark = dut.mark()
        ev, pressed = press_alarm(board)
        follow_alarm(board, ev, pressed, mark, results)
        board.rig.hold(board.cfg.get("hold_cancel_ms", 3000) + 800)
        dut.expect("event", 10, since=mark, type="cancel")
        alarms.append(ev["id"])
        if i % 10 == 0 or i == n - 1:
            heap.append(dut.cmd("heap")["alloc"])
    wait_until(lambda: dut.cmd("outbox")["ids"] == [], DELIVERY_TIMEOUT_S, 0.5, what="outbox empty")
    accepted = [m["id"] for m in dut.find("ack", since=since, stage="accepted")]
    assert all(a in accepted for a in alarms), f"not accepted: {sorted(set(alarms) - set(accepted))}"
    assert len(set(alarms)) == n
    assert heap[-1] - heap[0] <= HEAP_DRIFT_BUDGET, f"live heap after collect went {heap}"
    results.notes.append(f"soak: {n} alarms, live heap after collect {heap}")

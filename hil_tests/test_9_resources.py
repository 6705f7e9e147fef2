"""Resources: the GC heap the firmware has used so far stays within budget, and the flash outbox
empties: every event was stored by the bridge. Run last (the file order), they cover the whole run."""

from __future__ import annotations

from hil_tests.harness.flows import DELIVERY_TIMEOUT_S, wait_until

DATA_HEAP_BUDGET = 64 * 1024  # DESIGN section 5: firmware GC heap peak in a full scenario


def test_heap_after_the_scenarios(boards, results):
    for b in boards:
        heap = b.dut.cmd("heap")
        results.heap_sample(b.dev, heap)
        assert heap["free"] > 0 and heap["alloc"] > 0 and heap["peak"] >= heap["base"]
        assert heap["data_peak"] <= DATA_HEAP_BUDGET, (
            f"{b.dev}: runtime data peaked at {heap['data_peak']} bytes over the loaded code; budget {DATA_HEAP_BUDGET}")


def test_flash_outbox_empty_at_the_end(boards):
    for b in boards:
        wait_until(lambda b=b: b.dut.cmd("outbox")["ids"] == [], DELIVERY_TIMEOUT_S, 0.5,
                   what=f"{b.dev}: outbox empty")
        assert b.dut.cmd("status")["outbox"] == 0

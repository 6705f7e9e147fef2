"""Watchdog: a hang injected through the console (test rig only) ends in a reboot by the watchdog
and a `fault` event with cause `watchdog`, which reaches the bridge."""

from __future__ import annotations

from hil_tests.harness.flows import wait_ack

WDT_SLACK_S = 30  # room for busy cores


def test_hang_ends_in_watchdog_reboot_and_fault_event(board):
    dut = board.dut
    since = dut.mark()
    boot_before = dut.cmd("status")["boot"]
    board.rig.hang()
    # the board's watchdog period plus a boot
    boot = dut.expect("boot", board.cfg.get("wdt_ms", 10000) / 1000 + board.rig.boot_timeout_s + WDT_SLACK_S,
                      since=since)
    assert boot["reset_cause"] == "wdt" and boot["boot"] == boot_before + 1
    fault = dut.expect("event", board.rig.event_timeout_s, since=since, type="fault", cause="watchdog")
    wait_ack(board, fault["id"], "stored", since)
    st = dut.cmd("status")
    assert st["boot"] == boot_before + 1 and st["dev"] == board.dev

"""Steps the scenarios share: raise a fresh alarm, follow it to the 114 intake, read what arrived."""

from __future__ import annotations

import time

from stack.procs import wait_until  # noqa: F401  (the suite's polling wait, from the one harness)

from .bench import Board
from .dut import Msg

DELIVERY_TIMEOUT_S = 40.0  # generous: two busy cores, a broker that may just have come back


def call_point_ready_in(board: Board) -> float:
    """Seconds until a press raises a new alarm: a press during an alarm's cancel window may be the
    start of a cancelling hold instead (firmware/callpoint.py). A cancel or a reboot ends the window."""
    dut = board.dut
    alarms = dut.find("event", type="alarm")
    if not alarms:
        return 0.0
    last = alarms[-1]
    if any(m.t >= last.t for m in dut.find("event", type="cancel") + dut.find("boot")):
        return 0.0
    window = board.cfg.get("cancel_window_s", 30)
    return max(0.0, window + 0.5 - (time.monotonic() - last.t))


def press_alarm(board: Board, ms: int = 150) -> tuple[Msg, float]:
    """Press the call point once; the alarm's `event` line and the time of the press."""
    wait = call_point_ready_in(board)
    if wait:
        time.sleep(wait)  # a deliberate gap: the firmware's cancel window is a timer with no line of its own
    since = board.dut.mark()
    t0 = time.monotonic()
    board.rig.press(ms)
    ev = board.dut.expect("event", 10, since=since, type="alarm", cause="button")
    return ev, t0


def wait_ack(board: Board, eid: str, stage: str, since: int = 0, timeout: float = DELIVERY_TIMEOUT_S) -> Msg:
    return board.dut.expect("ack", timeout, since=since, id=eid, stage=stage)


def follow_alarm(board: Board, ev: Msg, pressed_at: float | None, since: int, results=None) -> Msg:
    """Wait for the alarm to be sent, stored at the bridge and accepted by the 114 intake; record the
    time of each hop. Returns the `accepted` ack (it carries the incident id)."""
    dut = board.dut
    sent = dut.expect("sent", DELIVERY_TIMEOUT_S, since=since, id=ev["id"])
    stored = wait_ack(board, ev["id"], "stored", since)
    accepted = wait_ack(board, ev["id"], "accepted", since)
    if results is not None:
        times = {"event": ev.t, "sent": sent.t, "stored": stored.t, "accepted": accepted.t}
        if pressed_at is not None:
            times["press"] = pressed_at
        results.alarm_path(times)
    return accepted


def incidents_of(intake, dev: str) -> list[dict]:
    return [i for i in intake.incidents() if incident_device(i) == dev]


def incident_device(incident: dict) -> str | None:
    rep = incident.get("reporter") or (incident.get("report") or {}).get("reporter") or {}
    return rep.get("device_id") or incident.get("device_id")

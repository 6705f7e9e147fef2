"""The real-board rig without hardware: the DTR/RTS sequences that press BOOT and reset an
ESP32-DevKitC, the port opened with both lines released, and the reasons a rig gives when it cannot."""

from __future__ import annotations

import pytest

from hil_tests.harness.dut import Dut, open_serial
from hil_tests.harness.rig import (
    LINE_GAP_S,
    ConsoleRig,
    LineTimeline,
    RigUnavailable,
    SerialLineRig,
    VirtualRig,
    rig_for,
)

DEVKITC = {"name": "esp32-devkitc", "chip": "esp32", "usb": "uart",
           "pins": {"button": {"pin": 0, "pull": "up", "active": "low"}}}
PANIC = {"name": "esp32-panic-battery", "chip": "esp32", "usb": "uart",
         "pins": {"button": {"pin": 27, "pull": "up", "active": "low"}}}
C3 = {"name": "esp32-c3-devkitm", "chip": "esp32c3", "usb": "native",
      "pins": {"button": {"pin": 9, "pull": "up", "active": "low"}}}


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class LineRecorder:
    """Stands for a serial port: records every DTR/RTS change with the (fake) time it happened."""

    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.changes: list[tuple[float, str, bool]] = []
        self._dtr = self._rts = False

    @property
    def dtr(self):
        return self._dtr

    @dtr.setter
    def dtr(self, v):
        self._dtr = v
        self.changes.append((self.clock(), "dtr", v))

    @property
    def rts(self):
        return self._rts

    @rts.setter
    def rts(self, v):
        self._rts = v
        self.changes.append((self.clock(), "rts", v))


def timeline():
    clock = FakeClock()
    rec = LineRecorder(clock)
    return rec, LineTimeline(rec, sleep=clock.sleep, clock=clock)


def states(rec):
    """(time, dtr, rts) after each change."""
    dtr = rts = False
    out = []
    for t, line, v in rec.changes:
        if line == "dtr":
            dtr = v
        else:
            rts = v
        out.append((t, dtr, rts))
    return out


def test_press_asserts_dtr_alone_for_the_press_time():
    rec, lines = timeline()
    lines.press(300)
    s = states(rec)
    held = [(t, d, r) for t, d, r in s if d]
    assert held and all(not r for _, _, r in held), "RTS must stay released while DTR holds GPIO0 low"
    assert s[-1][1:] == (False, False), "both lines released at the end"
    down_at = held[0][0]
    up_at = next(t for t, d, _ in s if t > down_at and not d)
    assert up_at - down_at >= 0.3


def test_reset_asserts_rts_alone_then_releases():
    rec, lines = timeline()
    lines.reset()
    s = states(rec)
    in_reset = [(t, d, r) for t, d, r in s if r]
    assert in_reset and all(not d for _, d, _ in in_reset), "DTR must stay released so the chip boots the app"
    assert s[-1][1:] == (False, False)


def test_line_changes_are_spaced_tens_of_ms_apart():
    rec, lines = timeline()
    lines.press(100)
    lines.reset()
    lines.press(50)
    times = [t for t, _, _ in rec.changes]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= LINE_GAP_S - 1e-9 and LINE_GAP_S >= 0.02


def test_port_opens_with_dtr_and_rts_released():
    ser = open_serial("loop://")
    try:
        assert ser.is_open and ser.dtr is False and ser.rts is False
    finally:
        ser.close()


def test_serial_rig_press_on_a_loopback_port():
    """The whole SerialLineRig on pyserial's loop:// port: the line changes happen, and the board's
    console line (here echoed back by the loop) ends the press."""
    ser = open_serial("loop://")
    dut = Dut(ser, name="loop")
    try:
        rec_clock = FakeClock()
        rig = SerialLineRig(dut, test_rig=False, broker=None,
                            timeline=LineTimeline(ser, gap=0.001, sleep=lambda s: None, clock=rec_clock))
        dut.send({"ev": "button", "state": "up", "ms": 100})  # the loop echoes what a board would print
        rig.press(100)
        assert ser.dtr is False and ser.rts is False
    finally:
        dut.close()


def test_rig_choice_follows_the_board_entry():
    ser = open_serial("loop://")
    dut = Dut(ser, name="loop")
    try:
        assert isinstance(rig_for(DEVKITC, dut, test_rig=False), SerialLineRig)
        assert isinstance(rig_for(PANIC, dut, test_rig=True), ConsoleRig)
        assert isinstance(rig_for(C3, dut, test_rig=True), ConsoleRig)
        assert isinstance(rig_for({"usb": "pty"}, dut, test_rig=True, launcher_pid=lambda: 1), VirtualRig)
    finally:
        dut.close()


def test_unavailable_actions_say_why():
    ser = open_serial("loop://")
    dut = Dut(ser, name="loop")
    try:
        devkit = rig_for(DEVKITC, dut, test_rig=False)
        with pytest.raises(RigUnavailable, match="power cut needs a switched supply"):
            devkit.power_cut()
        with pytest.raises(RigUnavailable, match="--broker given"):
            devkit.network_down()
        with pytest.raises(RigUnavailable, match="test rig enabled"):
            devkit.hang()
        c3 = rig_for(C3, dut, test_rig=False)
        with pytest.raises(RigUnavailable, match="native USB has no DTR/RTS.*test rig"):
            c3.press()
        panic = rig_for(PANIC, dut, test_rig=False)
        with pytest.raises(RigUnavailable, match="not on GPIO0"):
            panic.press()
    finally:
        dut.close()

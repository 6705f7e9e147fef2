"""Physical actions on a board under test: press, hold, reset, power cut, network loss, hang.

Which rig a board gets follows its boards.yaml entry (`usb`) and its provisioning (`test_rig`):

- `pty` (the virtual board): everything through the console and the launcher process;
- `uart` with the call point on GPIO0 (ESP32-DevKitC and the like): the USB-serial adapter's DTR and
  RTS lines drive the board's auto-reset circuit. With only DTR asserted GPIO0 (BOOT) is held low while
  the chip runs: a press. With only RTS asserted EN is held low: a reset. Lines change at least
  LINE_GAP_S apart so the circuit's RC settles between steps;
- anything else (native USB, a call point on another GPIO): the console `press` command, which the
  firmware accepts only when the device was provisioned with the test rig enabled.

An action a rig cannot perform raises RigUnavailable with the reason; tests turn it into a skip.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from .dut import Dut

LINE_GAP_S = 0.05  # space DTR/RTS changes tens of ms apart
RESET_HOLD_S = 0.1  # EN low long enough for a clean reset
BOOT_TIMEOUT_S = 30.0
EMULATED_BOOT_TIMEOUT_S = 120.0  # the emulated ESP32 loads the firmware in about half a minute of CPU


class RigUnavailable(Exception):
    """This rig cannot do that on this board; the message says why (it becomes the skip reason)."""


class Rig:
    kind = "base"
    power_cut_reason = "this rig cannot cut the board's power"
    network_reason = "this rig cannot take the board's network away"
    boot_timeout_s = BOOT_TIMEOUT_S  # from reset to the firmware's `boot` line
    event_timeout_s = 10.0  # from an input (a press, a hold) to the event it raises

    def __init__(self, dut: Dut, test_rig: bool):
        self.dut = dut
        self.test_rig = test_rig

    # -- the call point ---------------------------------------------------------------------------
    def press(self, ms: int = 150) -> None:
        """Press for `ms` and release; returns once the board has seen the release. A short press
        raises an alarm (EN 54-11 type A); a long hold after an alarm cancels it."""
        since = self.dut.mark()
        self._actuate(ms)
        self.dut.expect("button", ms / 1000 + self.event_timeout_s, since=since, state="up")

    def hold(self, ms: int) -> None:
        self.press(ms)

    def _actuate(self, ms: int) -> None:
        self._console_press(ms)

    def _console_press(self, ms: int) -> None:
        reply = self.dut.ask("press", ms=ms)
        if not reply.get("ok"):
            raise RigUnavailable(f"console press refused by the device ({reply.get('error')}); "
                                 "provision it with the test rig enabled")

    # -- resets -------------------------------------------------------------------------------------
    def reset(self) -> dict:
        """Reset the chip; returns the `boot` line of the new start."""
        since = self.dut.mark()
        self.dut.cmd("reboot")
        return self.dut.expect("boot", self.boot_timeout_s, since=since)

    def power_cut(self) -> dict:
        raise RigUnavailable(self.power_cut_reason)

    # -- network ---------------------------------------------------------------------------------------
    def network_down(self) -> None:
        raise RigUnavailable(self.network_reason)

    def network_up(self) -> None:
        raise RigUnavailable(self.network_reason)

    # -- watchdog --------------------------------------------------------------------------------------
    def hang(self) -> None:
        """Stop the firmware's main loop (console `hang`, test rig only); the watchdog must end it."""
        if not self.test_rig:
            raise RigUnavailable("hang injection needs a device provisioned with the test rig enabled")
        reply = self.dut.ask("hang")
        if not reply.get("ok"):
            raise RigUnavailable(f"the device refused hang ({reply.get('error')})")

    def describe(self) -> str:
        return self.kind


class ConsoleNetwork:
    """The network held down by the firmware itself (console `net`, test rig only)."""

    dut: Dut

    def network_down(self) -> None:
        self.dut.cmd("net", up=False)

    def network_up(self) -> None:
        self.dut.cmd("net", up=True)


class VirtualRig(ConsoleNetwork, Rig):
    """A virtual board: button and network through the console; reset = the firmware restarts on the
    same flash (soft reboot); power cut = SIGKILL of the firmware by its launcher (SIGUSR1)."""

    kind = "virtual"

    def __init__(self, dut: Dut, launcher_pid: Callable[[], int]):
        super().__init__(dut, test_rig=True)
        self._pid = launcher_pid

    def power_cut(self) -> dict:
        import os

        since = self.dut.mark()
        os.kill(self._pid(), signal.SIGUSR1)
        return self.dut.expect("boot", self.boot_timeout_s, since=since)


class LineTimeline:
    """Drives DTR/RTS on an open pyserial port, never two changes closer than `gap` seconds apart."""

    def __init__(self, ser, gap: float = LINE_GAP_S, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.ser = ser
        self.gap = gap
        self.sleep = sleep
        self.clock = clock
        self._last = clock() - gap

    def set(self, dtr: bool | None = None, rts: bool | None = None) -> None:
        wait = self.gap - (self.clock() - self._last)
        if wait > 0:
            self.sleep(wait)
        if dtr is not None:
            self.ser.dtr = dtr
        if rts is not None:
            self.ser.rts = rts
        self._last = self.clock()

    def press(self, ms: int) -> None:
        """Only DTR asserted: GPIO0 low while the chip runs; both released after `ms`."""
        self.set(rts=False)
        self.set(dtr=True)
        self.sleep(ms / 1000)
        self._last = self.clock()
        self.set(dtr=False)

    def reset(self, hold: float = RESET_HOLD_S) -> None:
        """Only RTS asserted: EN low (chip in reset); release and let it boot the app (GPIO0 high)."""
        self.set(dtr=False)
        self.set(rts=True)
        self.sleep(hold)
        self._last = self.clock()
        self.set(rts=False)


class BrokerNetwork:
    """Network loss on a real board: its Wi-Fi cannot be pulled from here, so the broker it talks to
    is stopped (only when the suite started that broker)."""

    broker = None
    network_reason = "the broker was not started by the suite (--broker given), so it cannot be stopped"

    def network_down(self) -> None:
        if self.broker is None:
            raise RigUnavailable(self.network_reason)
        self.broker.stop()

    def network_up(self) -> None:
        if self.broker is None:
            raise RigUnavailable(self.network_reason)
        self.broker.start()


class SerialLineRig(BrokerNetwork, Rig):
    """An ESP32 on a USB-UART adapter with the DTR/RTS auto-reset circuit and its call point on GPIO0.
    Network loss = the broker stopped (`broker` controls the suite's own broker, or None)."""

    kind = "serial-dtr-rts"
    power_cut_reason = ("the board is powered from the same USB cable as its console: a power cut needs "
                        "a switched supply this rig does not have")

    def __init__(self, dut: Dut, test_rig: bool, broker=None, timeline: LineTimeline | None = None):
        super().__init__(dut, test_rig)
        self.lines = timeline or LineTimeline(dut.ser)
        self.broker = broker

    def _actuate(self, ms: int) -> None:
        self.lines.press(ms)

    def reset(self) -> dict:
        since = self.dut.mark()
        self.lines.reset()
        return self.dut.expect("boot", self.boot_timeout_s, since=since)



class EmulatedRig(ConsoleNetwork, Rig):
    """The emulated ESP32 (stack/esp32_qemu.py): the button through the test rig's console press (the
    emulator has no switch to close), the network held down by the board's own Wi-Fi code (console
    `net`), reset = console reboot (machine.reset), power cut = QEMU killed and booted on the same flash."""

    kind = "emulated ESP32"
    boot_timeout_s = EMULATED_BOOT_TIMEOUT_S
    event_timeout_s = 60.0  # a flash write costs the emulator seconds, and a press waits for it

    def __init__(self, dut: Dut, power_cut: Callable[[], None]):
        super().__init__(dut, test_rig=True)
        self._power_cut = power_cut

    def power_cut(self) -> dict:
        since = self.dut.mark()
        self._power_cut()
        return self.dut.expect("boot", self.boot_timeout_s, since=since)


class ConsoleRig(BrokerNetwork, Rig):
    """A board whose call point cannot be reached electrically (native USB, a switch on another GPIO):
    presses through the console, accepted only with the test rig enabled; reset = console reboot."""

    kind = "console"
    power_cut_reason = "no electrical access to this board's power: a power cut needs a switched supply"

    def __init__(self, dut: Dut, test_rig: bool, why: str, broker=None):
        super().__init__(dut, test_rig)
        self.why = why
        self.broker = broker

    def _actuate(self, ms: int) -> None:
        if not self.test_rig:
            raise RigUnavailable(f"{self.why}, and the device was not provisioned with the test rig enabled")
        self._console_press(ms)


def button_on_gpio0(board: dict) -> bool:
    button = (board.get("pins") or {}).get("button") or {}
    return board.get("chip") == "esp32" and button.get("pin") == 0 and button.get("active", "low") == "low"


def rig_for(board: dict, dut: Dut, *, test_rig: bool, broker=None, launcher_pid=None) -> Rig:
    """The rig a board entry (boards.yaml, as a dict) allows."""
    usb = board.get("usb")
    if usb == "pty":
        if launcher_pid is None:
            raise ValueError("a virtual board needs its launcher's pid")
        return VirtualRig(dut, launcher_pid)
    if usb == "uart" and button_on_gpio0(board):
        return SerialLineRig(dut, test_rig, broker)
    if usb == "uart":
        why = "the call point is not on GPIO0, so DTR cannot press it"
    else:
        why = f"a board on {usb or 'unknown'} USB has no DTR/RTS auto-reset circuit"
    return ConsoleRig(dut, test_rig, why, broker)



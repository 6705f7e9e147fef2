"""The device under test, seen through its serial console (docs/protocol.md section 9).

The project's console client (stack/console.py), with its failures raised as test assertions, so a
board that does not answer fails the scenario with the tail of its serial log.
"""

from __future__ import annotations

from stack.console import Console, Msg, matcher, open_serial

__all__ = ["Dut", "DutError", "Msg", "matcher", "open_serial"]


class DutError(AssertionError):
    """The board did not answer, answered `ok: false`, or never printed the line a test waited for."""


class Dut(Console):
    Error = DutError

    def __init__(self, ser, name: str = "dut", timeout: float = 15.0):
        super().__init__(ser, timeout=timeout, name=name)

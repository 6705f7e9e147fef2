"""The installer's view of a device's serial console: the one console client (stack/console.py), with
its failures raised as installer errors, so `baochay-provision` prints them in plain words."""

from __future__ import annotations

from stack.console import Console, Msg

from .errors import ProvisionError

__all__ = ["ConsoleError", "DeviceConsole", "Msg"]


class ConsoleError(ProvisionError):
    pass


class DeviceConsole(Console):
    Error = ConsoleError
    no_reply_hint = (": is the device running our firmware, and is nothing else reading the port? "
                     "(a real board: check the baud rate, 115200, and press RESET once)")

    def __init__(self, port: str, baud: int = 115200, reply_timeout: float = 3.0):
        super().__init__(port, baud, timeout=reply_timeout)

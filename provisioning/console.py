"""Host side of the device's serial console: one JSON object per line each way (docs/protocol.md §9).

Lines that are not JSON objects (boot ROM text, MicroPython tracebacks) are skipped; unsolicited
`{"ev": ...}` lines are kept so a caller can wait for one.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from .errors import ProvisionError
from .serialport import open_port


class ConsoleError(ProvisionError):
    pass


class DeviceConsole:
    def __init__(self, port: str, baud: int = 115200, reply_timeout: float = 3.0):
        self.port = port
        self.reply_timeout = reply_timeout
        self.ser = open_port(port, baud=baud, timeout=0.05)
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._tags = itertools.count(1)

    def close(self) -> None:
        self.ser.close()

    def __enter__(self) -> DeviceConsole:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON object line before the deadline, or None."""
        while time.monotonic() < deadline:
            i = self._buf.find(b"\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 1:]
                try:
                    obj = json.loads(line.decode("utf-8", "replace").strip())
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    return obj
                continue
            chunk = self.ser.read(max(1, self.ser.in_waiting))
            if chunk:
                self._buf += chunk
            if len(self._buf) > 65536 and b"\n" not in self._buf:
                self._buf = b""  # binary noise (wrong baud rate): drop it
        return None

    def request(self, cmd: str, timeout: float | None = None, attempts: int = 2, **args) -> dict[str, Any]:
        """Send {"cmd": cmd, ...}; return the reply. Resent once: a board that just booted may miss it."""
        timeout = timeout or self.reply_timeout
        for _ in range(attempts):
            tag = f"p{next(self._tags)}"
            msg = dict(args, cmd=cmd, tag=tag)
            self.ser.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())
            self.ser.flush()
            deadline = time.monotonic() + timeout
            while True:
                obj = self._read_line(deadline)
                if obj is None:
                    break
                if "ev" in obj:
                    self.events.append(obj)
                elif obj.get("re") == cmd and obj.get("tag", tag) == tag:
                    return obj
        raise ConsoleError(
            f"no reply to '{cmd}' on {self.port}: is the device running our firmware, and is nothing else "
            f"reading the port? (a real board: check the baud rate, 115200, and press RESET once)"
        )

    def wait_event(self, match, timeout: float) -> dict[str, Any] | None:
        """The first unsolicited line (already received or arriving before the timeout) where match(obj)."""
        for i, ev in enumerate(self.events):
            if match(ev):
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            obj = self._read_line(deadline)
            if obj is None:
                return None
            if "ev" not in obj:
                continue
            if match(obj):
                return obj
            self.events.append(obj)

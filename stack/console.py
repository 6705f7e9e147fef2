"""A host-side client for a board's serial console (JSON lines, docs/protocol.md section 9).

Works the same on a real board's serial port and on a virtual board's pty. Keeps the whole log so a
failing test can show what the board said.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable

import serial


class ConsoleError(RuntimeError):
    pass


class Console:
    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 10.0):
        try:
            self.ser = serial.serial_for_url(port, baudrate=baudrate, timeout=0.1, exclusive=True)
        except serial.SerialException as e:
            raise ConsoleError(f"cannot open serial port {port}: {e}") from None
        self.port = port
        self.timeout = timeout
        self.log: list[str] = []
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        self._tags = itertools.count(1)
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while not self._closed:
            try:
                chunk = self.ser.read(max(1, self.ser.in_waiting))  # whatever is there, at once
            except (serial.SerialException, OSError, TypeError):
                if self._closed:
                    return
                time.sleep(0.1)
                continue
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                text = raw.decode("utf-8", "replace").rstrip("\r")
                with self._cond:
                    self.log.append(text)
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        obj = None
                    if isinstance(obj, dict):
                        self.lines.append(obj)
                    self._cond.notify_all()

    def send(self, obj: dict) -> None:
        self.ser.write((json.dumps(obj) + "\n").encode())
        self.ser.flush()

    def request(self, cmd: str, timeout: float | None = None, **args) -> dict:
        """Send a command, return its reply (raises ConsoleError on ok=false or no reply)."""
        tag = next(self._tags)
        start = len(self.lines)
        self.send({"cmd": cmd, "tag": tag, **args})
        reply = self.wait_for(lambda m: m.get("re") == cmd and m.get("tag") == tag, timeout, since=start)
        if not reply.get("ok"):
            raise ConsoleError(f"{cmd}: {reply.get('error')}")
        return reply

    def wait_for(self, pred: Callable[[dict], bool], timeout: float | None = None, since: int = 0) -> dict:
        """The first JSON line (from index `since`) matching pred; ConsoleError after timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        i = since
        with self._cond:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(self.log[-30:])
                    raise ConsoleError(f"timed out waiting on {self.port}; last lines:\n{tail}")
                self._cond.wait(left)

    def mark(self) -> int:
        """An index to pass as `since` so that only lines after now count."""
        with self._cond:
            return len(self.lines)

    def events(self, ev: str, since: int = 0) -> list[dict]:
        with self._cond:
            return [m for m in self.lines[since:] if m.get("ev") == ev]

    def close(self) -> None:
        self._closed = True
        try:
            self.ser.close()
        except Exception:
            pass

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The host's client of a board's serial console (JSON lines, docs/protocol.md section 9): the one
used by the installer's `baochay-provision verify` (provisioning/console.py), the tests, the HIL suite
(hil_tests/harness/dut.py), `make run` and the benchmarks.

Works the same on a real board's serial port and on a virtual board's pty. A reader thread keeps
every line with the time it arrived, so a caller waits on events instead of sleeping, can measure
how long each hop took, and can show the whole serial log when something fails. Each user picks the
exception its failures raise (`Error`): a test assertion for the suites, an installer error for
`verify`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import serial

from provisioning.serialport import PortError
from provisioning.serialport import open_port as open_serial  # released DTR/RTS: opening resets no board

from .procs import Arrivals

__all__ = ["Console", "ConsoleError", "Msg", "matcher", "open_serial"]
C = TypeVar("C", bound="Console")


class ConsoleError(RuntimeError):
    """The port would not open, the board answered `ok: false`, or never printed an awaited line."""


class Msg(dict):
    """One JSON line from the board; `t` is when it arrived (time.monotonic())."""

    t: float = 0.0


def matcher(what: str | Callable[[dict], bool] | None, fields: dict) -> Callable[[dict], bool]:
    """expect("indicator", state="sent") or expect(lambda m: ...): one predicate either way."""

    def pred(m: dict) -> bool:
        if callable(what):
            if not what(m):
                return False
        elif what is not None and m.get("ev") != what:
            return False
        return all(m.get(k) == v for k, v in fields.items())

    return pred


class Console:
    Error: type[Exception] = ConsoleError
    no_reply_hint = ""  # what a user should check when the board does not answer

    def __init__(self, port: str | serial.SerialBase, baudrate: int = 115200, timeout: float = 10.0,
                 name: str | None = None):
        if isinstance(port, str):
            try:
                self.ser = open_serial(port, baudrate)
            except PortError as e:  # already in plain words: missing, busy, no permission
                raise self.Error(str(e)) from None
            except (serial.SerialException, OSError) as e:
                raise self.Error(f"cannot open serial port {port}: {e}") from None
            self.port = port
        else:
            self.ser = port
            self.port = getattr(port, "port", None) or "serial"
        self.name = name or self.port
        self.timeout = timeout
        self.log: list[tuple[float, str]] = []  # every line, JSON or not (boot ROM text, tracebacks)
        self._msgs: Arrivals[Msg] = Arrivals()
        self.lines = self._msgs.items  # the JSON object lines
        self._cond = self._msgs.cond
        self._tags = itertools.count(1)
        self._closed = False
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"serial-{self.name}", daemon=True)
        self._reader.start()

    # -- reading ---------------------------------------------------------------------------------
    def _read(self) -> None:
        buf = b""
        while not self._closed:
            try:
                # whatever is there now, or wait (up to the port timeout) for one byte: a fixed-size
                # read would hold lines back until the timeout and blur the arrival times
                chunk = self.ser.read(max(1, self.ser.in_waiting))
            except (serial.SerialException, OSError, TypeError):
                if self._closed:
                    return
                time.sleep(0.1)  # a board resetting can drop its USB link for a moment
                continue
            if not chunk:
                continue
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._line(raw.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, text: str) -> None:
        now = time.monotonic()
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        with self._cond:
            self.log.append((now, text))
            if isinstance(obj, dict):
                m = Msg(obj)
                m.t = now
                self._msgs.add(m)

    # -- talking -----------------------------------------------------------------------------------
    def send(self, obj: dict) -> None:
        with self._write_lock:
            self.ser.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())
            self.ser.flush()

    def ask(self, cmd: str, timeout: float | None = None, attempts: int = 1, **args) -> Msg:
        """Send a command and return its reply, whatever `ok` says. With attempts > 1 it is sent again
        after each `timeout` without a reply (a board that has just booted may miss the first)."""
        wait = timeout or self.timeout
        since = self.mark()
        tags: list[int] = []
        for _ in range(attempts):
            tags.append(next(self._tags))
            self.send({"cmd": cmd, "tag": tags[-1], **args})
            reply = self.first(lambda m: m.get("re") == cmd and m.get("tag") in tags, wait, since=since)
            if reply is not None:
                return reply
        raise self.Error(f"{self.name}: no reply to '{cmd}' within {wait:.0f} s{self.no_reply_hint};"
                         f" last lines:\n{self.tail(25)}")

    def request(self, cmd: str, timeout: float | None = None, **args) -> Msg:
        """Send a command; its reply, or an error when the board says ok: false."""
        reply = self.ask(cmd, timeout, **args)
        if not reply.get("ok"):
            raise self.Error(f"{self.name}: {cmd} refused: {reply.get('error')}")
        return reply

    cmd = request

    def expect(self, what: str | Callable[[dict], bool] | None = None, timeout: float | None = None,
               since: int = 0, **fields) -> Msg:
        """The first line from index `since` matching `what` (an `ev` name or a predicate) and
        `fields`; an error with the tail of the log after `timeout` seconds."""
        wait = timeout or self.timeout
        found = self.first(what, wait, since, **fields)
        if found is None:
            want = what if isinstance(what, str) else "a matching line"
            raise self.Error(f"{self.name}: no {want} {fields or ''} within {wait:.0f} s;"
                             f" last lines:\n{self.tail(25)}")
        return found

    def first(self, what: str | Callable[[dict], bool] | None = None, timeout: float | None = None,
              since: int = 0, **fields) -> Msg | None:
        """As expect(), but None after `timeout` seconds instead of an error."""
        return self._msgs.first(matcher(what, fields), timeout or self.timeout, since)

    def wait_for(self, pred: Callable[[dict], bool], timeout: float | None = None, since: int = 0) -> Msg:
        return self.expect(pred, timeout, since)

    def find(self, what: str | Callable[[dict], bool] | None = None, since: int = 0, **fields) -> list[Msg]:
        """Every line so far (from `since`) matching, without waiting."""
        return self._msgs.find(matcher(what, fields), since)

    def events(self, ev: str, since: int = 0) -> list[Msg]:
        return self.find(ev, since)

    def mark(self) -> int:
        """An index for `since`: only lines printed after now count."""
        return self._msgs.mark()

    def log_mark(self) -> int:
        with self._cond:
            return len(self.log)

    def tail(self, n: int = 30) -> str:
        return "\n".join(text for _t, text in self.log[-n:])

    def log_text(self, since: int = 0) -> str:
        with self._cond:
            start = self.log[0][0] if self.log else 0.0
            return "\n".join(f"{t - start:9.3f}  {text}" for t, text in self.log[since:])

    def close(self) -> None:
        self._closed = True
        if self._reader is not threading.current_thread():
            # Let the reader's read return (within the port timeout) before closing: a read still
            # in progress would keep the port's exclusive lock a moment longer, and a tool opening
            # the port right after (verify, flash) would find it busy.
            self._reader.join(timeout=2.0)
        try:
            self.ser.close()
        except Exception:
            pass

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

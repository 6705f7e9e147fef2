"""A host-side client for a board's serial console (JSON lines, docs/protocol.md section 9).

Works the same on a real board's serial port and on a virtual board's pty. A reader thread keeps
every line with the time it arrived, so a caller waits on events instead of sleeping, can measure
how long each hop took, and can show the whole serial log when something fails. Used by the tests,
the HIL suite (hil_tests/harness/dut.py), `make run` and the benchmarks.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable

import serial


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


def open_serial(port: str, baudrate: int = 115200, exclusive: bool = True) -> serial.Serial:
    """Open a serial port with DTR and RTS released *before* it opens: on a board with the DTR/RTS
    auto-reset circuit, the default (both asserted on open) would hold it in reset or in the boot ROM."""
    if "://" in port:
        ser = serial.serial_for_url(port, do_not_open=True, baudrate=baudrate, timeout=0.1)
    else:
        ser = serial.Serial(baudrate=baudrate, timeout=0.1, exclusive=exclusive)
        ser.port = port
    ser.dtr = False
    ser.rts = False
    ser.open()
    return ser


class Console:
    Error: type[Exception] = ConsoleError

    def __init__(self, port: str | serial.Serial, baudrate: int = 115200, timeout: float = 10.0,
                 name: str | None = None):
        if isinstance(port, str):
            try:
                self.ser = open_serial(port, baudrate)
            except (serial.SerialException, OSError) as e:
                raise self.Error(f"cannot open serial port {port}: {e}") from None
            self.port = port
        else:
            self.ser = port
            self.port = getattr(port, "port", None) or "serial"
        self.name = name or self.port
        self.timeout = timeout
        self.log: list[tuple[float, str]] = []  # every line, JSON or not (boot ROM text, tracebacks)
        self.lines: list[Msg] = []
        self._cond = threading.Condition()
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
                self.lines.append(m)
            self._cond.notify_all()

    # -- talking -----------------------------------------------------------------------------------
    def send(self, obj: dict) -> None:
        with self._write_lock:
            self.ser.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())
            self.ser.flush()

    def ask(self, cmd: str, timeout: float | None = None, **args) -> Msg:
        """Send a command and return its reply, whatever `ok` says."""
        tag = next(self._tags)
        since = self.mark()
        self.send({"cmd": cmd, "tag": tag, **args})
        return self.expect(lambda m: m.get("re") == cmd and m.get("tag") == tag, timeout, since=since)

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
        pred = matcher(what, fields)
        wait = timeout or self.timeout
        deadline = time.monotonic() + wait
        i = since
        with self._cond:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    want = what if isinstance(what, str) else "a matching line"
                    raise self.Error(f"{self.name}: no {want} {fields or ''} within {wait:.0f} s;"
                                     f" last lines:\n{self.tail(25)}")
                self._cond.wait(left)

    def wait_for(self, pred: Callable[[dict], bool], timeout: float | None = None, since: int = 0) -> Msg:
        return self.expect(pred, timeout, since)

    def find(self, what: str | Callable[[dict], bool] | None = None, since: int = 0, **fields) -> list[Msg]:
        """Every line so far (from `since`) matching, without waiting."""
        pred = matcher(what, fields)
        with self._cond:
            return [m for m in self.lines[since:] if pred(m)]

    def events(self, ev: str, since: int = 0) -> list[Msg]:
        return self.find(ev, since)

    def mark(self) -> int:
        """An index for `since`: only lines printed after now count."""
        with self._cond:
            return len(self.lines)

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

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Processes this project starts, and waiting for things to happen.

Every service of the local system (broker, bridge, intake, virtual board, the benchmark's relay) is a
`Process`: its output goes to a log file and its last lines stay in memory for the error message, it
counts as started once it prints its ready line, and it is stopped by its own handle, never by name.
`wait_until` is the one way to wait for a condition that has no event to wait on.
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Generic, Protocol, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class Arrivals(Generic[T]):
    """What another thread receives (console lines, MQTT messages), in order, and the wait for the
    first that matches from an index on: the waiting side sleeps until something arrives."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self.cond = threading.Condition()  # reentrant: a caller may add while holding it

    def add(self, item: T) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def mark(self) -> int:
        """An index for `since`: only what arrives after now counts."""
        with self.cond:
            return len(self.items)

    def find(self, pred: Callable[[T], object], since: int = 0) -> list[T]:
        """Everything so far (from `since`) matching, without waiting."""
        with self.cond:
            return [x for x in self.items[since:] if pred(x)]

    def first(self, pred: Callable[[T], object], timeout: float, since: int = 0) -> T | None:
        """The first item from index `since` matching, waiting up to `timeout` s for it; else None."""
        found = self.first_at(pred, timeout, since)
        return None if found is None else found[1]

    def first_at(self, pred: Callable[[T], object], timeout: float, since: int = 0) -> tuple[int, T] | None:
        """As first(), with the item's index."""
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.items):
                    if pred(self.items[i]):
                        return i, self.items[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


class StartError(RuntimeError):
    """A process exited or stayed silent instead of printing its ready line."""


def wait_until(fn: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll fn() until it returns something truthy, for state that has no event to wait on (HTTP,
    a database, a file); raises AssertionError naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = fn()
    while not last:
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)
        last = fn()
    return last


def stop_process(p: subprocess.Popen | None, timeout: float = 5.0) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; only ever the process we were handed.
    Returns its exit code when it ended by itself or on SIGTERM, None when it had to be killed."""
    if p is None:
        return None
    if p.poll() is not None:
        return p.returncode
    p.terminate()
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


class Stoppable(Protocol):
    def stop(self) -> object: ...


def stop_all(*things: Stoppable | None) -> None:
    """Stop each of `things` that is there, in the order given (what was started last, first)."""
    for t in things:
        if t is not None:
            t.stop()


def child_env(extra_path: Sequence[str | Path] = ()) -> dict[str, str]:
    """This environment with the repository (and `extra_path`) first on PYTHONPATH."""
    parts = [str(ROOT), *(str(p) for p in extra_path)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(parts))


class Process:
    """One child process. stdout and stderr go, line by line, to `log` (appended: a restart keeps the
    earlier output) and to the last `keep` lines in memory. `ready`: start() returns once a line
    containing it appears; None: start() returns at once. `on_line` sees every line as it comes;
    `stdin`: write() feeds the process (a driver taking commands)."""

    def __init__(self, cmd: Sequence[str], *, name: str | None = None, log: Path | None = None,
                 ready: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT,
                 keep: int = 60, on_line: Callable[[str], None] | None = None, stdin: bool = False):
        self.cmd = [str(c) for c in cmd]
        self.name = name or Path(self.cmd[0]).name
        self.log = Path(log) if log else None
        self.ready = ready
        self.env = env if env is not None else child_env()
        self.cwd = cwd
        self.on_line = on_line
        self.stdin = stdin
        self.proc: subprocess.Popen | None = None
        self.ready_line = ""
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._cond = threading.Condition()
        self._ended = False

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> str:
        """Start it; the ready line (or "" without `ready`). StartError, the process stopped, when it
        exits or stays silent for `timeout` s."""
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab") if self.log else None
        self.ready_line, self._ended = "", False
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env,
                                     stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._pump, args=(self.proc, out), name=f"out-{self.name}",
                         daemon=True).start()
        if self.ready is None:
            return ""
        with self._cond:
            if not self._cond.wait_for(lambda: self.ready_line or self._ended, timeout):
                why = f"no {self.ready!r} within {timeout:.0f} s"
            elif not self.ready_line:
                why = f"exited with status {self.proc.wait()}"
            else:
                return self.ready_line
        self.stop()
        where = f"; see {self.log}" if self.log else ""
        raise StartError(f"{self.name} did not start: {why}{where}\n{self.tail()}")

    def _pump(self, proc: subprocess.Popen, out: IO[bytes] | None) -> None:
        """Copy one run's output. A restarted process gets a pump of its own: the last run's pump,
        still draining, must not say the new one ended or was ready (seen under load: start() then
        waited for ever on a process that was running fine)."""
        stream = proc.stdout
        assert stream is not None
        try:
            for raw in stream:
                if out:
                    out.write(raw)
                    out.flush()
                text = raw.decode(errors="replace").rstrip("\r\n")
                with self._cond:
                    self._lines.append(text)
                    if self.ready and not self.ready_line and self.ready in text and proc is self.proc:
                        self.ready_line = text.strip()
                    self._cond.notify_all()
                if self.on_line:
                    self.on_line(text)
        finally:
            if out:
                out.close()
            with self._cond:
                if proc is self.proc:
                    self._ended = True
                self._cond.notify_all()

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(list(self._lines)[-n:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop it politely, then for sure (stop_process); its exit status when it stopped by itself."""
        p, self.proc = self.proc, None
        return stop_process(p, timeout)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (a crash, a power cut)."""
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    def write(self, text: str) -> None:
        """Send text to its stdin (started with stdin=True)."""
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError(f"{self.name} takes no input")
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.wait(timeout)

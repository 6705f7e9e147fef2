"""Processes this project starts: stopped politely first, then for sure."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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

"""Fault injection: how the intake misbehaves on purpose, for tests and demos of an outage.

Modes (applied to the /v1 API only; the page, /healthz and /admin keep working so a test can always
see and switch the mode):
  normal  answer as usual
  fail    answer 503 Service Unavailable
  stall   read the request, then never answer until the mode changes (the connection is then closed
          without an answer and the request is not processed: it was "lost")
  slow    answer normally after `delay_s` seconds
  drop    process the request, then close the connection without answering (the answer is "lost")
"""

from __future__ import annotations

import threading

MODES = ("normal", "fail", "stall", "slow", "drop")


class FaultMode:
    def __init__(self, mode: str = "normal", delay_s: float = 2.0) -> None:
        self._cond = threading.Condition()
        self._generation = 0  # bumped on every change, so stalled requests know to give up
        self._closing = False
        self.mode = "normal"
        self.delay_s = 2.0
        self.set(mode, delay_s)

    def set(self, mode: str, delay_s: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if delay_s is not None:
            if isinstance(delay_s, bool) or not isinstance(delay_s, (int, float)) or not 0 <= delay_s <= 3600:
                raise ValueError("delay_s must be a number of seconds between 0 and 3600")
        with self._cond:
            self.mode = mode
            if delay_s is not None:
                self.delay_s = float(delay_s)
            self._generation += 1
            self._cond.notify_all()

    def snapshot(self) -> dict:
        with self._cond:
            return {"mode": self.mode, "delay_s": self.delay_s}

    def stall(self) -> None:
        """Block until the mode changes or the server closes."""
        with self._cond:
            gen = self._generation
            self._cond.wait_for(lambda: self._generation != gen or self._closing)

    def sleep(self, seconds: float) -> bool:
        """Sleep for `slow` mode; cut short when the server closes. False if it is closing."""
        with self._cond:
            return not self._cond.wait_for(lambda: self._closing, timeout=seconds)

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()

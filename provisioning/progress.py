"""A small text progress bar for the installer's long steps (compile, flash copy)."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, width: int = 30, out: TextIO | None = None):
        self.label = label
        self.total = max(total, 1)
        self.width = width
        self.out = out or sys.stderr
        self.n = 0
        self.live = hasattr(self.out, "isatty") and self.out.isatty()

    def update(self, n: int) -> None:
        self.n = min(n, self.total)
        if not self.live:
            return  # a log file gets only the final state (done), not one redraw per step
        filled = self.width * self.n // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        # \r redraws the line on a terminal; a log file just gets the last state per line
        self.out.write(f"\r{self.label:<10} [{bar}] {self.n}/{self.total}")
        self.out.flush()

    def done(self) -> None:
        self.live = True
        self.update(self.total)
        self.out.write("\n")
        self.out.flush()

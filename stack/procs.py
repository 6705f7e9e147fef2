"""Processes this project starts: stopped politely first, then for sure."""

from __future__ import annotations

import subprocess


def stop_process(p: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; only ever the process we were handed."""
    if p is None or p.poll() is not None:
        return
    p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

"""stack/procs.py: a restarted process is judged by its own output, not by the last run's."""

from __future__ import annotations

import subprocess
import sys

from stack.procs import Process


def test_the_last_runs_output_ending_late_does_not_end_or_ready_the_new_run(tmp_path):
    p = Process([sys.executable, "-u", "-c", "print('up', flush=True); import time; time.sleep(30)"],
                name="sleeper", ready="up", log=tmp_path / "p.log")
    try:
        assert p.start(10) == "up"
        # the last run's pump, still draining when the new run started: its end and its lines
        old = subprocess.Popen([sys.executable, "-c", "print('up')"], stdout=subprocess.PIPE)
        old.wait()
        p.ready_line, p._ended = "", False
        p._pump(old, None)
        assert not p._ended and p.ready_line == ""  # neither "ended" nor "ready" comes from it
        assert p.running
    finally:
        p.stop()

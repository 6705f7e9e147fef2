"""Run every benchmark under bench/ in turn and print their figures: `python -m bench`.

Each runs in its own process (a benchmark may re-run itself under another interpreter, as
bench/detectors.py does under MicroPython); one that does not exist yet is skipped with a note.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bridge_throughput", "detectors", "e2e_latency", "firmware_heap", "flood", "late_delivery")


def main(argv=None) -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"== bench.{name}", flush=True)
        if not (HERE / f"{name}.py").exists():
            print(f"   (bench/{name}.py does not exist yet: skipped)", flush=True)
            continue
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent)
        if rc:
            print(f"   bench.{name} exited with status {rc}", flush=True)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

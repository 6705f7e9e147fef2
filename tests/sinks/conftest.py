"""Lets the sink tests import their helpers (sink_helpers.py) by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

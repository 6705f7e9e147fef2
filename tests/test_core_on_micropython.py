"""The portable core tests again, on the real MicroPython interpreter (the unix port from PyPI).

One pytest case per core test module, so a failure names the module; the runner's output is shown.
"""

import re
import subprocess
from pathlib import Path

import pytest

from provisioning.vboard import micropython_exe

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "tests" / "core"
MODULES = sorted(p.stem for p in CORE.glob("test_*.py"))


def micropython() -> str:
    return micropython_exe()


@pytest.mark.parametrize("module", MODULES)
def test_core_module_on_micropython(module):
    r = subprocess.run(
        [micropython(), "-X", "heapsize=2M", str(CORE / "runner.py"), module],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    out = r.stdout + r.stderr
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m, f"runner did not finish:\n{out}"
    passed, failed = int(m.group(1)), int(m.group(2))
    assert failed == 0 and r.returncode == 0, out
    assert passed > 0, f"no tests ran in {module}:\n{out}"

"""Helpers for the provisioning tests: run the installer's command, find MicroPython."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from provisioning.vboard import micropython_exe

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, env_extra: dict | None = None, timeout: float = 120):
    """Run the installer's command as the installer would, from a working directory of its own."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "provisioning.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def micropython() -> str:
    return micropython_exe()



"""Type-check firmware/ against MicroPython's own stubs (micropython-esp32-stubs and its stdlib).

CPython's typeshed would call `time.ticks_ms` or `machine.Pin` unknown; the MicroPython stdlib
stubs replace it, so a call to an API the ESP32 port does not have fails here, not on a board.
The firmware is deliberately unannotated (small, micropython-lib style), so untyped bodies are
checked, with the few error codes that only ask for annotations turned off.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELAXED = ("var-annotated", "union-attr", "assignment", "call-overload", "operator", "no-redef")


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    if not (site / "stdlib" / "VERSIONS").exists() or not (site / "machine.pyi").exists():
        print("error: micropython-esp32-stubs is not installed; run `make setup`", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "mypy", "--custom-typeshed-dir", str(site), "--python-version", "3.11",
           "--no-site-packages", "--explicit-package-bases", "--check-untyped-defs", "--ignore-missing-imports",
           "--cache-dir", str(ROOT / ".mypy_cache" / "firmware")]
    for code in RELAXED:
        cmd += ["--disable-error-code", code]
    cmd.append("firmware")
    stubs, modules = board_stubs()
    # the stubs have a few errors of their own; only the firmware's are ours to fix
    conf = ROOT / ".mypy_cache" / "firmware.ini"
    conf.write_text("[mypy]\n[mypy-" + ",".join(sorted(modules)) + "]\nignore_errors = True\n")
    cmd[3:3] = ["--config-file", str(conf)]
    env = dict(os.environ, MYPYPATH=str(stubs))
    return subprocess.call(cmd, cwd=ROOT, env=env)


def board_stubs() -> tuple[Path, set[str]]:
    """machine.pyi, network.pyi, esp32.pyi … sit at the top of site-packages among CPython packages;
    link just the ESP32 stub files into a folder of their own for mypy's stub path."""
    from importlib.metadata import files

    out = ROOT / ".mypy_cache" / "esp32-stubs"
    modules: set[str] = set()
    if out.exists():
        shutil.rmtree(out)
    for f in files("micropython-esp32-stubs") or ():
        if f.suffix != ".pyi":
            continue
        target = out / f
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f.locate())
        modules.add(f.parts[0].removesuffix(".pyi") + ("" if len(f.parts) == 1 else ".*"))
    return out, modules


if __name__ == "__main__":
    sys.exit(main())

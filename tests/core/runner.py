# Runs the portable core tests under MicroPython (which has no pytest) or CPython.
#   micropython tests/core/runner.py [module ...]
# Collects test_* functions from tests/core/test_*.py; async tests run with asyncio.run.
# Prints one line per test and closes with "N passed, N failed".
import os
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
ROOT = HERE + "/../.."
sys.path.insert(0, ROOT + "/firmware")
sys.path.insert(0, HERE)

import asyncio  # noqa: E402


def _modules(names):
    if names:
        return [n[:-3] if n.endswith(".py") else n for n in names]
    return sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))


def _is_coro(x):
    return type(x).__name__ in ("generator", "coroutine")


def run(names):
    passed = failed = 0
    for modname in _modules(names):
        modname = modname.rsplit("/", 1)[-1]
        try:
            mod = __import__(modname)
        except Exception as e:
            print("ERROR import %s: %r" % (modname, e))
            sys.print_exception(e) if hasattr(sys, "print_exception") else None
            failed += 1
            continue
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            try:
                r = fn()
                if _is_coro(r):
                    asyncio.run(r)
                passed += 1
                print("PASS %s.%s" % (modname, name))
            except Exception as e:
                failed += 1
                print("FAIL %s.%s: %r" % (modname, name, e))
                if hasattr(sys, "print_exception"):
                    sys.print_exception(e)
                else:
                    import traceback

                    traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1:]) else 0)

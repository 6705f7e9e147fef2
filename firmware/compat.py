# The few things that differ between MicroPython and CPython, in one place.
import time

try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
except AttributeError:  # CPython: the core tests run there too

    def ticks_ms():
        return int(time.monotonic() * 1000)  # type: ignore[attr-defined]  # CPython only

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


try:
    import micropython

    const = micropython.const
except ImportError:

    def const(x):
        return x


def exists(path):
    import os

    try:
        os.stat(path)
        return True
    except OSError:
        return False


def is_dir(path):
    import os

    try:
        return bool(os.stat(path)[0] & 0x4000)
    except OSError:
        return False


def makedirs(path):
    import os

    p = ""
    for part in path.split("/"):
        if not part:
            p = "/" if not p else p
            continue
        p = part if not p else (p + part if p.endswith("/") else p + "/" + part)
        if not is_dir(p):
            os.mkdir(p)

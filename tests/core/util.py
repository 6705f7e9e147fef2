# Helpers for the portable core tests; they run under CPython and MicroPython alike.
import os

_n = [0]


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def rmtree(path):
    try:
        st = os.stat(path)
    except OSError:
        return
    if st[0] & 0x4000:  # directory
        for name in os.listdir(path):
            rmtree(path + "/" + name)
        os.rmdir(path)
    else:
        os.remove(path)


class TempDir:
    """A fresh directory under /tmp, removed on exit (no tempfile module on MicroPython)."""

    def __init__(self):
        import time

        _n[0] += 1
        base = "/tmp/bctest-%d-%d-%d" % (os.getpid() if hasattr(os, "getpid") else 0, time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000), _n[0])
        self.path = base
        rmtree(base)
        os.mkdir(base)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        rmtree(self.path)
        return False


def raises(exc, fn, *args, **kw):
    """True when fn(*args) raises exc; the tests assert on it."""
    try:
        fn(*args, **kw)
    except exc:
        return True
    return False


def device_config(**keys):
    """The smallest device config firmware/config.py takes, with `keys` on top."""
    cfg = {"dev": "hn-a-0001", "key": "ab" * 32, "board": "virtual", "mqtt": {"host": "127.0.0.1"},
           "loc": {"lat": 21.0, "lon": 105.8}}
    cfg.update(keys)
    return cfg

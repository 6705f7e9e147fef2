"""How the suite is laid out on `make test`'s workers (pytest-xdist, `-n`).

Two kinds of tests must not be spread: the emulated ESP32's (`tests/integration/test_esp32_qemu*.py`:
one QEMU at a time, each takes a whole core, and a chip starved of it misses console replies and
MQTT writes) and the HIL suite's (one bench per session). Each kind is one unit of work, given to a
single worker.

The emulated chip is the longest unit, so it is handed out first; the other worker takes the rest,
tests that start processes before the quick ones, so that a long test does not end up alone at the
tail. While the chip runs, the other worker yields the CPU to it: a worker lowers its own priority
(nice 10, which its children inherit) before its first test that is not the chip's. The order is
stable within each class, and no test depends on it.

The units are ours, not `xdist_group` marks: loadgroup reads them back from rewritten node ids,
which newer pytest releases no longer allow (pytest-xdist issue 1386).
"""
from __future__ import annotations

import os
from fnmatch import fnmatch

import pytest

EMULATED = "tests/integration/test_esp32_qemu*.py"
HIL = "hil_tests/*"
_PROCESSES = ("tests/integration/*", HIL)
YIELD_NICE = 10
_yielded = False


def _path(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _emulated(nodeid: str) -> bool:
    return fnmatch(_path(nodeid), EMULATED)


def _unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its kind's name, or the test itself."""
    if _emulated(nodeid):
        return "emulated-esp32"
    if fnmatch(_path(nodeid), HIL):
        return "hil-bench"
    return nodeid


def _order(item: pytest.Item) -> int:
    if _emulated(item.nodeid):
        return 0
    return 1 if any(fnmatch(_path(item.nodeid), p) for p in _PROCESSES) else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_order)  # on every worker alike: the scheduler hands units out in this order


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _yielded
    if not _yielded and os.environ.get("PYTEST_XDIST_WORKER") and not _emulated(item.nodeid):
        os.nice(YIELD_NICE)  # for good: a process may raise its niceness, not lower it again
        _yielded = True


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the collection's order, not the units' sizes
    return Units(config, log)

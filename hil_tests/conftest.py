"""The HIL plugin: options, the bench (boards, rig, broker, bridge, intake), the `dut` and `rig`
fixtures, serial logs attached to failures, and the results written under --results.

    pytest hil_tests                                       virtual boards on ptys
    pytest hil_tests --port /dev/ttyUSB0 --board esp32-devkitc \
        --device-config var/devices/ID/device.json --broker 192.168.1.10:1883     a real board

Soak tests (marked `soak`) run only when asked for with `-m soak`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hil_tests.harness.bench import Bench, Board
from hil_tests.harness.dut import Dut
from hil_tests.harness.results import Results
from hil_tests.harness.rig import Rig, RigUnavailable

HERE = Path(__file__).resolve().parent
RESULTS = pytest.StashKey[Results]()
BENCH = pytest.StashKey[Bench]()


def pytest_addoption(parser):
    g = parser.getgroup("hil", "hardware-in-the-loop (hil_tests/)")
    g.addoption("--board", default="virtual", help="board entry in boards.yaml (default: virtual)")
    g.addoption("--port", default=None,
                help="serial device of a real board; without it the suite starts virtual boards itself")
    g.addoption("--device-config", default=None,
                help="with --port: the device.json the board was provisioned with (its id, key, location)")
    g.addoption("--broker", default=None,
                help="HOST:PORT of a running broker (default: start Mosquitto on a free loopback port)")
    g.addoption("--count", type=int, default=1, help="number of virtual boards under test (default 1)")
    g.addoption("--results", default=None, help="directory for junit.xml, summary.md, summary.json, serial logs")


def _board_entry(name: str) -> dict:
    from hil_tests.harness.bench import EMULATED, EMULATED_BOARD
    from provisioning.boards import BoardError, get_board

    if name == EMULATED:
        from stack.esp32_qemu import EmulatorMissing, find_emulator

        try:
            find_emulator()
        except EmulatorMissing as e:
            pytest.skip(str(e))
        return dict(get_board(EMULATED_BOARD).board_json(), usb="emulated")
    try:
        return get_board(name).board_json()
    except BoardError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    results = config.getoption("--results")
    if results and not config.option.xmlpath:
        config.option.xmlpath = str(Path(results) / "junit.xml")  # read by pytest's own junitxml plugin
    config.stash[RESULTS] = Results(config.getoption("--board"), "pending")


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    if "soak" in markexpr:
        return
    skip = pytest.mark.skip(reason="soak test: runs for minutes; select it with -m soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def bench(request, tmp_path_factory) -> Bench:
    cfg = request.config
    port = cfg.getoption("--port")
    board_name = cfg.getoption("--board")
    entry = _board_entry(board_name)
    if port and entry.get("usb") == "pty":
        raise pytest.UsageError("--port is for a real board: give its --board (e.g. esp32-devkitc)")
    if not port and entry.get("usb") not in ("pty", "emulated"):
        raise pytest.UsageError(f"board {board_name!r} is a real board: give its serial --port")
    if port and not cfg.getoption("--device-config"):
        raise pytest.UsageError("--port needs --device-config: the device.json the board was provisioned with")
    if port and not cfg.getoption("--broker"):
        raise pytest.UsageError("--port needs --broker HOST:PORT: the broker the board was provisioned for "
                                "(a board cannot reach a broker on this computer's loopback)")
    count = 1 if port else max(1, cfg.getoption("--count"))
    b = Bench(tmp_path_factory.mktemp("hil"), board_name, entry)
    try:
        b.start(port=port, count=count, broker=cfg.getoption("--broker"),
                device_config_path=cfg.getoption("--device-config"))
    except BaseException:
        b.stop()
        raise
    cfg.stash[BENCH] = b
    cfg.stash[RESULTS].rig = b.boards[0].rig.describe()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
def _settled(request):
    """Every scenario on the bench starts with nothing in flight (Bench.settle), so the files pass in
    any order."""
    if "bench" in request.fixturenames:
        request.getfixturevalue("bench").settle()


@pytest.fixture(scope="session")
def results(request) -> Results:
    return request.config.stash[RESULTS]


@pytest.fixture
def board(bench, request) -> Board:
    """The first board under test; its serial log from here on is attached to a failure."""
    request.node.hil_log_marks = {b.dev: (b.dut, b.dut.log_mark()) for b in bench.boards}
    return bench.boards[0]


@pytest.fixture
def boards(bench, request) -> list[Board]:
    request.node.hil_log_marks = {b.dev: (b.dut, b.dut.log_mark()) for b in bench.boards}
    return bench.boards


@pytest.fixture
def dut(board) -> Dut:
    return board.dut


@pytest.fixture
def rig(board) -> Rig:
    return board.rig


@pytest.fixture
def intake(bench):
    return bench.intake


@pytest.fixture
def observer(bench):
    if bench.observer is None:
        pytest.skip("no observer credentials for the external broker (BAOCHAY_HIL_OBSERVER_PASSWORD)")
    return bench.observer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(RigUnavailable):
        # an action this rig cannot perform on this board: a skip with the reason, not a failure
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"rig cannot: {call.excinfo.value}")
        return
    if rep.failed:
        for dev, (dut, mark) in getattr(item, "hil_log_marks", {}).items():
            rep.sections.append((f"serial log {dev}", dut.log_text(mark) or "(nothing printed)"))


def pytest_runtest_logreport(report):
    if not report.nodeid.startswith("hil_tests/") and "/hil_tests/" not in report.nodeid:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        detail = ""
        if report.skipped and isinstance(report.longrepr, tuple):
            detail = report.longrepr[2]
        elif report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            detail = crash.message if crash is not None else str(report.longrepr).strip().splitlines()[-1]
        _results_of(report).scenario(report.nodeid.split("hil_tests/", 1)[1], report.outcome,
                                     report.duration, detail)


_CONFIG: list = []


def _results_of(report) -> Results:
    return _CONFIG[0].stash[RESULTS]


def pytest_sessionstart(session):
    _CONFIG[:] = [session.config]


def pytest_sessionfinish(session):
    cfg = session.config
    out = cfg.getoption("--results")
    results = cfg.stash[RESULTS]
    if not out or not results.scenarios:
        return
    bench = cfg.stash.get(BENCH, None)
    if bench is not None:
        bench.save_logs(Path(out))
    results.notes.append(f"finished {time.strftime('%H:%M:%S')}")
    results.write(Path(out))

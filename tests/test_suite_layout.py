"""The suite's layout on `make test`'s workers (conftest.py at the root): what must share a worker
does, and the emulated chip is handed out first."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("suite_layout", ROOT / "conftest.py")
layout = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layout)


def test_every_emulated_chip_test_is_one_unit_and_every_hil_scenario_another():
    units = {layout._unit(n) for n in (
        "tests/integration/test_esp32_qemu.py::test_a_long_hold_cancels_the_alarm",
        "tests/integration/test_esp32_qemu_tls.py::test_an_alarm_over_tls_is_accepted_by_114")}
    assert units == {"emulated-esp32"}
    assert {layout._unit("hil_tests/test_2_alarm.py::t"), layout._unit("hil_tests/test_5_sensors.py::t[x]")} == {"hil-bench"}
    other = "tests/integration/test_device_alarm.py::test_forged_ack_is_ignored"
    assert layout._unit(other) == other  # anything else is spread test by test


def test_the_emulated_chip_comes_first_then_the_tests_that_start_processes():
    class Item:
        def __init__(self, nodeid):
            self.nodeid = nodeid

    items = [Item(n) for n in ("tests/integration/test_esp32_qemu.py::a", "tests/core/test_sign.py::b",
                               "hil_tests/test_2_alarm.py::c", "tests/integration/test_tls.py::d",
                               "tests/bridge/test_bridge_fuzz.py::e")]
    layout.pytest_collection_modifyitems(None, items)
    assert [i.nodeid[-1] for i in items] == ["a", "c", "d", "b", "e"]

# The serial console's error lines: each loop's exceptions are counted, and told at most once per
# loop every 10 s, so a step failing every few milliseconds cannot flood the console.
import console as cm
from compat import ticks_add, ticks_ms


def _console():
    lines = []
    c = cm.Console(lines.append)
    return c, lines


def test_errors_are_counted_and_told_once_per_loop_per_period():
    c, lines = _console()
    for _ in range(500):
        c.error("button", OSError("pin read failed"))
    c.error("send", "a detail string")
    assert c.errors == 501
    told = [line for line in lines if '"ev":"error"' in line]
    assert len(told) == 2, told  # one per loop, however many came
    assert '"where":"button"' in told[0] and "pin read failed" in told[0] and '"n":1' in told[0]
    assert '"where":"send"' in told[1] and "a detail string" in told[1]


def test_the_next_line_after_the_period_says_how_many_came_since():
    c, lines = _console()
    c.error("net", OSError("Wifi Internal Error"))
    for _ in range(41):
        c.error("net", OSError("Wifi Internal Error"))
    c._told["net"][0] = ticks_add(ticks_ms(), -10001)  # its last line ten seconds ago
    c.error("net", OSError("Wifi Internal Error"))
    told = [line for line in lines if '"ev":"error"' in line]
    assert len(told) == 2 and '"n":42' in told[1], told


def test_a_long_error_is_cut():
    c, lines = _console()
    c.error("sensing", ValueError("x" * 500))
    assert len(lines[0]) < 200

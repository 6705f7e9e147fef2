# The periodic test signal every device sends (App._periodic_test): one `test` event with cause
# `periodic` every test_s seconds, the time left kept on flash so that reboots never postpone it.
from app import App
from persist import Counters
from util import TempDir


class Dev:
    """What _periodic_test reads of the app: config, flash counters, and where events go."""

    def __init__(self, directory, test_s):
        self.cfg = {"test_s": test_s}
        self.counters = Counters(directory)
        self.at = None  # what _housekeeping keeps between passes
        self.sent = []

    def raise_event(self, type, cause, data=None, ref=None):
        self.sent.append((type, cause, data))
        return "e%d" % len(self.sent)

    def run(self, start_s, end_s):
        """Housekeeping passes every 500 ms from start_s to end_s; the seconds of the tests sent."""
        at = []
        for half in range(start_s * 2, end_s * 2):
            n = len(self.sent)
            self.at = App._periodic_test(self, half * 500, self.at)
            if len(self.sent) > n:
                at.append(half / 2)
        return at


def test_a_test_every_period():
    with TempDir() as d:
        dev = Dev(d, 8)
        at = dev.run(0, 40)
        assert dev.sent[0] == ("test", "periodic", {"test_s": 8})
        gaps = [b - a for a, b in zip(at, at[1:])]
        assert len(at) == 5 and gaps == [8, 8, 8, 8], at


def test_off_at_zero():
    with TempDir() as d:
        dev = Dev(d, 0)
        assert dev.run(0, 30) == [] and dev.counters.text("test_left_s") == ""


def test_reboots_bring_the_test_closer_never_later():
    with TempDir() as d:
        # a device that reboots every 3 s, with a 20 s period: the test still comes
        seen = []
        for boot in range(12):
            dev = Dev(d, 20)  # a fresh app on the same flash: the time left is read back
            seen += dev.run(0, 3)
        assert len(seen) >= 1, seen
        # a device that reboots once halfway keeps what it had used of the period
        d2 = d + "/b"
        first = Dev(d2, 20).run(0, 10)
        after = Dev(d2, 20).run(0, 20)
        assert first == [] and after and after[0] <= 10, after


def test_a_shorter_period_after_a_config_change_is_not_waited_out():
    with TempDir() as d:
        Dev(d, 86400).run(0, 2)
        assert Dev(d, 8).run(0, 10), "the test waits for the old, longer period"

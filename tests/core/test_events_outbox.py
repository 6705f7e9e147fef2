# Events are numbered by a persisted counter and signed; the outbox keeps them across reboots.
import json

from clock import Clock
from events import EventFactory
from outbox import Outbox
from persist import Counters
from protocol import open_frame
from sensing import Incidents
from sign import Signer
from util import TempDir, raises

KEY = bytes(range(32))
LOC = {"lat": 21.028511, "lon": 105.804817, "acc": 15, "src": "fixed", "age": 0}


def _factory(d):
    return EventFactory("hn-a-0001", Signer(KEY), Counters(d + "/state"), Clock(boot=3))


def test_event_is_signed_and_complete():
    with TempDir() as d:
        ctr, eid, frame = _factory(d).make("alarm", "button", LOC, {"press_ms": 0})
        assert ctr == 1 and eid == "hn-a-0001-00000001"
        ev = json.loads(open_frame(frame, Signer(KEY).hexmac))
        assert ev["v"] == 1 and ev["id"] == eid and ev["dev"] == "hn-a-0001" and ev["ctr"] == 1
        assert ev["type"] == "alarm" and ev["cause"] == "button" and ev["boot"] == 3
        assert ev["loc"] == LOC and ev["data"] == {"press_ms": 0} and ev["ts"] is None
        assert "ref" not in ev


def test_counter_survives_reboot_and_cancel_refers():
    with TempDir() as d:
        _factory(d).make("alarm", "button", LOC)
        f2 = _factory(d)  # a reboot: new objects on the same flash
        ctr, eid, frame = f2.make("cancel", "button", LOC, ref="hn-a-0001-00000001")
        assert ctr == 2
        ev = json.loads(open_frame(frame, Signer(KEY).hexmac))
        assert ev["ref"] == "hn-a-0001-00000001"
        assert raises(ValueError, f2.make, "bogus", "x", LOC)


class _FullHeapSigner(Signer):
    """Fails to build the frame the first `n` times, as a fragmented heap does."""

    def __init__(self, key, n):
        super().__init__(key)
        self.n = n

    def hexmac(self, body):
        if self.n:
            self.n -= 1
            raise MemoryError("memory allocation failed")
        return super().hexmac(body)


def test_an_event_the_heap_cannot_hold_uses_up_no_number():
    with TempDir() as d:
        f = EventFactory("hn-a-0001", _FullHeapSigner(KEY, 3), Counters(d + "/state"), Clock(boot=3))
        for _ in range(3):  # the app retries on its next pass
            assert raises(MemoryError, f.make, "alarm", "button", LOC)
        ctr, eid, frame = f.make("alarm", "button", LOC)
        assert ctr == 1 and eid == "hn-a-0001-00000001"
        assert Counters(d + "/state").get("ctr") == 1  # persisted before the event leaves the factory


def test_incidents_link_a_sensor_story():
    inc = Incidents()
    assert inc.ref_for("prealarm", "heat") is None
    inc.raised("prealarm", "heat", "d-00000001", None)
    assert inc.ref_for("alarm", "heat") == "d-00000001"  # the alarm confirms the prealarm
    inc.raised("alarm", "heat", "d-00000002", "d-00000001")
    inc.raised("fault", "i2c", "d-00000003", None)
    assert inc.ref_for("restore", "i2c") == "d-00000003"  # a fault's restore names the fault
    inc.raised("restore", "i2c", "d-00000004", "d-00000003")
    assert inc.ref_for("restore", "heat") == "d-00000001"  # the end of the incident
    inc.raised("restore", "heat", "d-00000005", "d-00000001")
    assert inc.ref_for("prealarm", "smoke") is None  # a new incident


def test_outbox_order_and_removal_across_reopen():
    with TempDir() as d:
        ob = Outbox(d + "/ob", limit=8)
        for c in (3, 1, 2):
            assert ob.put(c, "alarm", b"frame%d" % c)
        ob2 = Outbox(d + "/ob", limit=8)  # after a reboot
        assert ob2.ctrs() == [1, 2, 3]
        assert ob2.read(1) == b"frame1" and ob2.read(3) == b"frame3"
        assert ob2.remove(2) and not ob2.remove(2) and ob2.read(2) is None
        assert ob2.ctrs() == [1, 3]


def test_outbox_evicts_faults_never_alarms():
    with TempDir() as d:
        ob = Outbox(d + "/ob", limit=4)
        ob.put(1, "fault", b"f1")
        ob.put(2, "alarm", b"a2")
        ob.put(3, "restore", b"r3")
        ob.put(4, "alarm", b"a4")
        ob.put(5, "alarm", b"a5")  # full: the oldest evictable (1) goes
        assert ob.ctrs() == [2, 3, 4, 5] and ob.evicted == 1
        ob.put(6, "cancel", b"c6")  # 3 goes
        ob.put(7, "alarm", b"a7")  # nothing evictable left: alarms are kept anyway
        assert ob.ctrs() == [2, 4, 5, 6, 7] and len(ob) > ob.limit


def test_outbox_ignores_half_written_records():
    with TempDir() as d:
        ob = Outbox(d + "/ob")
        ob.put(1, "alarm", b"a1")
        with open(d + "/ob/00000002.k.tmp", "wb") as f:
            f.write(b"half")  # a power cut during a write
        ob2 = Outbox(d + "/ob")
        assert ob2.ctrs() == [1]


def _seq(n):
    """A stand-in for os.urandom: the same bytes each time, so the test knows the epoch."""
    return bytes(range(0xa0, 0xa0 + n))


def test_an_install_draws_its_epoch_once_and_every_event_carries_it():
    with TempDir() as d:
        c = Counters(d + "/state")
        ep = c.epoch(_seq)
        assert ep == "a0a1a2a3"
        f = EventFactory("hn-a-0001", Signer(KEY), c, Clock(boot=1), ep)
        ctr, eid, frame = f.make("alarm", "button", LOC)
        assert eid == "hn-a-0001-a0a1a2a3-00000001"
        ev = json.loads(open_frame(frame, Signer(KEY).hexmac))
        assert ev["ep"] == ep and ev["id"] == eid and ev["ctr"] == 1
        # a reboot keeps the install's epoch: no new random draw
        assert Counters(d + "/state").epoch(lambda n: b"\xff" * n) == ep
    with TempDir() as d:  # a fresh filesystem (a re-flash): another epoch, the counter from 1 again
        c = Counters(d + "/state")
        assert c.epoch(lambda n: b"\x01" * n) == "01010101"
        f = EventFactory("hn-a-0001", Signer(KEY), c, Clock(boot=1), c.epoch(_seq))
        assert f.make("alarm", "button", LOC)[1] == "hn-a-0001-01010101-00000001"


def test_a_broken_epoch_file_is_replaced_not_trusted():
    with TempDir() as d:
        c = Counters(d + "/state")
        with open(d + "/state/epoch", "w") as f:
            f.write("NOT-HEX!")
        assert c.epoch(_seq) == "a0a1a2a3"
        with open(d + "/state/epoch") as f:
            assert f.read() == "a0a1a2a3"

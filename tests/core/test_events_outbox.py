# Events are numbered by a persisted counter and signed; the outbox keeps them across reboots.
import json

from clock import Clock
from events import EventFactory, ctr_of, event_id, read_signed
from outbox import Outbox
from persist import Counters
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
        body = Signer(KEY).open(frame)
        assert body is not None
        ev = json.loads(body)
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
        ev = json.loads(Signer(KEY).open(frame))
        assert ev["ref"] == "hn-a-0001-00000001"
        assert raises(ValueError, f2.make, "bogus", "x", LOC)


class _FullHeapSigner(Signer):
    """Fails to build the frame the first `n` times, as a fragmented heap does."""

    def __init__(self, key, n):
        super().__init__(key)
        self.n = n

    def frame(self, body):
        if self.n:
            self.n -= 1
            raise MemoryError("memory allocation failed")
        return super().frame(body)


def test_an_event_the_heap_cannot_hold_uses_up_no_number():
    with TempDir() as d:
        f = EventFactory("hn-a-0001", _FullHeapSigner(KEY, 3), Counters(d + "/state"), Clock(boot=3))
        for _ in range(3):  # the app retries on its next pass
            assert raises(MemoryError, f.make, "alarm", "button", LOC)
        ctr, eid, frame = f.make("alarm", "button", LOC)
        assert ctr == 1 and eid == "hn-a-0001-00000001"
        assert Counters(d + "/state").get("ctr") == 1  # persisted before the event leaves the factory


def test_event_id_helpers():
    assert event_id("dev-1", 17) == "dev-1-00000017"
    assert ctr_of("dev-1-00000017") == 17
    assert ctr_of("garbage") == -1 and ctr_of(None) == -1


def test_read_signed_rejects_forgery():
    s = Signer(KEY)
    good = s.frame(b'{"v":1,"id":"x","stage":"stored"}')
    assert read_signed(s, good)["stage"] == "stored"
    assert read_signed(Signer(bytes(32)), good) is None
    assert read_signed(s, s.frame(b'{"v":2}')) is None
    assert read_signed(s, s.frame(b"[1,2]")) is None
    assert read_signed(s, s.frame(b"not json")) is None


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
        assert ob.ctrs() == [2, 4, 5, 6, 7]
        assert ob.over_limit()


def test_outbox_ignores_half_written_records():
    with TempDir() as d:
        ob = Outbox(d + "/ob")
        ob.put(1, "alarm", b"a1")
        with open(d + "/ob/00000002.k.tmp", "wb") as f:
            f.write(b"half")  # a power cut during a write
        ob2 = Outbox(d + "/ob")
        assert ob2.ctrs() == [1]

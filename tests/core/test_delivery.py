# Device-side delivery with the publish injected: outbox first, counter order, resend after the
# ack timeout, removal on `stored`, RAM fallback when flash refuses, and the stage rule.
import delivery as dl
from outbox import Outbox
from util import TempDir


class Wire:
    """A publish that records frames; `up` False is a broker that never acks (PUBACK lost)."""

    def __init__(self):
        self.frames = []
        self.up = True

    async def publish(self, frame):
        self.frames.append(bytes(frame))
        return self.up


class Listener:
    def __init__(self):
        self.lines = []
        self.stages = []

    def emit(self, ev, **fields):
        fields["ev"] = ev
        self.lines.append(fields)

    def on_stage(self, eid, stage, incident):
        self.stages.append((eid, stage, incident))


def _make(d, wire, who, limit=8):
    return dl.Delivery("hn-a-0001", Outbox(d + "/ob", limit), wire.publish, who.emit, who.on_stage)


async def test_sends_in_counter_order_once_until_the_timeout():
    with TempDir() as d:
        w, who = Wire(), Listener()
        q = _make(d, w, who)
        for c in (2, 1, 3):
            assert q.put(c, "alarm", b"frame%d" % c)
        assert q.wake.is_set()
        await q.send_due()
        assert w.frames == [b"frame1", b"frame2", b"frame3"]
        assert [x["id"] for x in who.lines if x["ev"] == "sent"] == [
            "hn-a-0001-00000001", "hn-a-0001-00000002", "hn-a-0001-00000003"]
        await q.send_due()  # within the ack timeout: nothing again
        assert len(w.frames) == 3
        for c in q._sent_at:  # the bridge stays silent past the timeout
            q._sent_at[c] -= dl.ACK_TIMEOUT_MS + 1
        await q.send_due()
        assert w.frames[3:] == [b"frame1", b"frame2", b"frame3"]
        assert len([x for x in who.lines if x["ev"] == "sent"]) == 3  # "sent" once per event


async def test_a_lost_puback_is_retried_on_the_next_wake():
    with TempDir() as d:
        w, who = Wire(), Listener()
        q = _make(d, w, who)
        q.put(1, "alarm", b"a1")
        w.up = False
        await q.send_due()
        await q.send_due()
        assert w.frames == [b"a1", b"a1"] and not [x for x in who.lines if x["ev"] == "sent"]


async def test_stored_removes_from_flash_and_stages_move_forward_only():
    with TempDir() as d:
        w, who = Wire(), Listener()
        q = _make(d, w, who)
        q.put(1, "alarm", b"a1")
        await q.send_due()
        q.ack("hn-a-0001-00000001", "stored")
        assert q.pending() == [] and Outbox(d + "/ob").ctrs() == []  # gone from flash too
        q.ack("hn-a-0001-00000001", "accepted", "114-1")
        q.ack("hn-a-0001-00000001", "failed", None, "late")  # accepted is final
        assert q.stage("hn-a-0001-00000001") == "accepted"
        acks = [x for x in who.lines if x["ev"] == "ack"]
        assert acks[1] == {"ev": "ack", "id": "hn-a-0001-00000001", "stage": "accepted", "incident": "114-1"}
        assert acks[2]["reason"] == "late"


async def test_failed_then_a_late_acceptance():
    with TempDir() as d:
        w, who = Wire(), Listener()
        q = _make(d, w, who)
        q.put(1, "alarm", b"a1")
        await q.send_due()
        q.ack("hn-a-0001-00000001", "failed", None, "no answer from 114")
        assert q.stage("hn-a-0001-00000001") == "failed" and q.pending() == []  # stored before failing
        q.ack("hn-a-0001-00000001", "accepted", "114-2")
        assert q.stage("hn-a-0001-00000001") == "accepted"
        assert who.stages[-1] == ("hn-a-0001-00000001", "accepted", "114-2")


class FullFlash(Outbox):
    def put(self, ctr, type, frame):
        return False


async def test_flash_refused_events_go_from_ram_and_leave_on_stored():
    with TempDir() as d:
        w, who = Wire(), Listener()
        q = dl.Delivery("hn-a-0001", FullFlash(d + "/ob"), w.publish, who.emit, who.on_stage)
        assert not q.put(1, "alarm", b"a1")
        assert q.pending() == [1] and len(q) == 1
        await q.send_due()
        assert w.frames == [b"a1"]
        q.ack("hn-a-0001-00000001", "stored")
        assert q.pending() == [] and len(q) == 0


async def test_what_a_previous_boot_left_is_sent_first():
    with TempDir() as d:
        ob = Outbox(d + "/ob")
        ob.put(7, "alarm", b"a7")
        w, who = Wire(), Listener()
        q = _make(d, w, who)
        assert q.wake.is_set()
        q.put(8, "fault", b"f8")
        await q.send_due()
        assert w.frames == [b"a7", b"f8"]


def test_stage_memory_is_bounded_but_keeps_the_active_alarm():
    with TempDir() as d:
        w, who = Wire(), Listener()
        q = _make(d, w, who)
        q.keep = "hn-a-0001-00000001"
        q.progress("hn-a-0001-00000001", "stored")
        for c in range(2, 40):
            q.progress("hn-a-0001-%08d" % c, "stored")
        assert len(q._stage) <= dl.STAGES_KEPT + 1
        assert q.stage("hn-a-0001-00000001") == "stored"


async def test_offline_it_reads_nothing_from_flash_and_sends_once_back_online():
    with TempDir() as d:
        w, who = Wire(), Listener()
        link = {"up": False}
        ob = Outbox(d + "/ob", 8)
        q = dl.Delivery("hn-a-0001", ob, w.publish, who.emit, who.on_stage, lambda: link["up"])
        for ctr in (1, 2, 3):
            q.put(ctr, "alarm", b"frame-%d" % ctr)
        reads = []
        real_read = ob.read
        ob.read = lambda ctr: reads.append(ctr) or real_read(ctr)
        await q.send_due()
        assert w.frames == [] and reads == []  # the network is down: the flash is not touched
        link["up"] = True
        await q.send_due()
        assert w.frames == [b"frame-1", b"frame-2", b"frame-3"] and reads == [1, 2, 3]


async def test_an_ack_names_one_install_and_an_earlier_installs_ack_clears_nothing():
    """After a re-flash the counter starts again: the bridge's ack for the earlier install's event 1
    must not remove this install's event 1 from the outbox."""
    import protocol

    with TempDir() as d:
        w, who = Wire(), Listener()
        q = dl.Delivery("hn-a-0001", Outbox(d + "/ob", 8), w.publish, who.emit, who.on_stage, ep="5eed0001")
        q.put(1, "alarm", b"frame1")
        await q.send_due()
        assert who.lines[0] == {"ev": "sent", "id": "hn-a-0001-5eed0001-00000001"}
        for old in ("hn-a-0001-00c0ffee-00000001", "hn-a-0001-00000001"):
            msg = {"v": 1, "id": old, "stage": "stored"}
            try:
                protocol.check_ack(msg, "hn-a-0001", q.ep)
                assert False, "an earlier install's ack was taken"
            except protocol.Refused as e:
                assert e.reason == "other-epoch"
        assert q.pending() == [1]
        q.ack(*protocol.check_ack({"v": 1, "id": "hn-a-0001-5eed0001-00000001", "stage": "stored"},
                                  "hn-a-0001", q.ep))
        assert q.pending() == []

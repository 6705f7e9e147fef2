# Device-side delivery (docs/protocol.md section 4, "Delivery and replay rules"): every event goes
# to the flash outbox before its first send (RAM only when flash refuses it), is published in
# counter order, resent when the bridge has not stored it in time, and leaves the outbox on an ack
# of `stored` or later. It tracks each event's best stage for the indicator. Portable: the MQTT
# publish, the console and the stage listener are injected.
import asyncio
import gc

from compat import ticks_diff, ticks_ms
from protocol import KEEP, advances, ctr_of, durable, event_id

ACK_TIMEOUT_MS = 30000  # resend an event the bridge has not stored within this time
STAGES_KEPT = 8  # event stages remembered; the active alarm's is the one shown
RAM_MAX = 16  # events kept in RAM when flash refuses them; past it the oldest goes, counted
# A pause that allocates nothing on MicroPython (its sleep_ms reuses one generator)
_sleep_ms = getattr(asyncio, "sleep_ms", None) or (lambda ms: asyncio.sleep(ms / 1000))


class Delivery:
    def __init__(self, dev, outbox, publish, emit, on_stage, online=None, ep=None):
        """publish(frame) -> awaitable bool (True once the broker took it, QoS 1);
        emit(ev, **fields) writes a console line; on_stage(eid, stage, incident) hears progress;
        online() -> bool: whether a publish can succeed now (None: always try)."""
        self._online = online
        self.dev = dev
        self.ep = ep  # the install's epoch (protocol.event_id)
        self.outbox = outbox
        self._publish = publish
        self._emit = emit
        self._on_stage = on_stage
        self._ram = []  # (ctr, frame, type) of events flash refused: still sent, from RAM
        self.lost = 0  # events the full RAM fallback had to drop (reported: outbox reply, status)
        self._sent_at = {}  # ctr -> ticks of the broker's PUBACK, until the bridge stores it
        self._stage = {}  # event id -> best stage seen
        self.keep = None  # an event id whose stage must outlive the bound (the active alarm)
        self.lowmem = 0  # MemoryErrors the sender rode out
        self.on_error = None  # on_error(where, exception): any other exception it survived
        self.wake = asyncio.Event()
        if outbox.ctrs():
            self.wake.set()  # what a previous boot left behind goes first

    def put(self, ctr, type, frame):
        """Persist and queue one event. False when flash refused it: it is sent from RAM, and the
        caller raises the outbox fault."""
        on_flash = self.outbox.put(ctr, type, frame)
        if not on_flash:
            if len(self._ram) >= RAM_MAX:  # bounded: a fault or restore goes first, else the oldest
                i = 0
                for k in range(len(self._ram)):
                    if self._ram[k][2] not in KEEP:
                        i = k
                        break
                gone = self._ram.pop(i)
                self.lost += 1
                self._emit("fault", cause="outbox", detail="RAM full too: event %d (%s) lost" % (gone[0], gone[2]))
            self._ram.append((ctr, frame, type))
        self.wake.set()
        return on_flash

    def __len__(self):
        return len(self.outbox) + len(self._ram)

    def pending(self):
        """Counters of the events the bridge has not stored yet, oldest first."""
        ctrs = self.outbox.ctrs()
        if self._ram:
            ctrs = sorted(ctrs + [x[0] for x in self._ram])
        return ctrs

    def stage(self, eid):
        return self._stage.get(eid)

    def _frame(self, ctr):
        for x in self._ram:
            if x[0] == ctr:
                return x[1]
        return self.outbox.read(ctr)

    async def run(self):
        """The sender: woken by a new event, a connect, and by the main loop twice a second."""
        while True:
            try:
                await self.wake.wait()
                self.wake.clear()
                await self.send_due()
            except MemoryError:  # (even awaiting a coroutine allocates)
                self.lowmem += 1  # the events stay queued: tried again on the next wake
                gc.collect()
                # Yield before trying again: with the heap still full, wake.wait() fails at once, and
                # a loop that never yields stops every task (the watchdog's feed, whatever would free
                # the heap) until the watchdog resets the device and a press owed in RAM is lost.
                await _sleep_ms(100)
            except Exception as e:  # a flash read that fails, a bug: the events stay queued, as above
                if self.on_error:
                    self.on_error("send", e)

    def _offline(self):
        return self._online is not None and not self._online()

    async def send_due(self):
        if self._offline():  # no flash reads for sends that would fail: the main loop comes first
            return
        now = ticks_ms()
        sent = False
        for ctr in self.pending():  # one frame in RAM at a time: the outbox may hold many
            if self._offline():
                break
            at = self._sent_at.get(ctr)
            if at is not None and ticks_diff(now, at) < ACK_TIMEOUT_MS:
                continue
            f = self._frame(ctr)
            if f is None:
                continue  # stored and removed while an earlier one was being sent
            ok = await self._publish(f)
            f = None
            sent = True
            await asyncio.sleep(0)  # a long outbox never holds the main loop (and its watchdog)
            if ok:
                self._sent_at[ctr] = ticks_ms()
                if at is None:
                    eid = event_id(self.dev, ctr, self.ep)
                    self._emit("sent", id=eid)
                    self.progress(eid, "sent")
        if sent:
            # A quiet point: collect now, so what lives on is placed in a compact heap rather
            # than among the garbage of the send (a small heap fails by fragmentation first).
            gc.collect()

    def ack(self, eid, stage, incident=None, reason=None):
        """An authentic ack of this install (protocol.check_ack has vetted it, epoch included)."""
        line = {"id": eid, "stage": stage}
        if incident:
            line["incident"] = incident
        if reason:
            line["reason"] = reason
        self._emit("ack", **line)
        if durable(stage):  # the bridge has it durably: the flash copy can go
            ctr = ctr_of(eid)
            self.outbox.remove(ctr)
            self._sent_at.pop(ctr, None)
            self._ram = [x for x in self._ram if x[0] != ctr]
        self.progress(eid, stage, incident)

    def progress(self, eid, stage, incident=None):
        if advances(stage, self._stage.get(eid)):
            self._stage[eid] = stage
            if len(self._stage) > STAGES_KEPT:  # bounded on a long-running device
                keep = self.keep
                self._stage = {k: v for k, v in self._stage.items() if k == keep or k == eid}
        self._on_stage(eid, stage, incident)

# The event factory: numbers each event with the persisted replay counter and signs the exact bytes
# it returns (docs/protocol.md section 4; the body's fields are protocol.event_body's).
from protocol import TYPES, dumps, event_body, frame


class EventFactory:
    def __init__(self, dev, signer, counters, clock, ep=None):
        self.dev = dev
        self.ep = ep  # the install's epoch: part of every event id, signed with the body
        self.signer = signer
        self.counters = counters
        self.clock = clock

    def make(self, type, cause, loc, data=None, ref=None):
        """-> (ctr, event id, signed frame)."""
        if type not in TYPES:
            raise ValueError("unknown event type " + str(type))
        # The number is taken (persisted) only once the frame is built, and before it is stored or
        # sent anywhere: a heap too full to build it (the app tries again later) uses up no numbers.
        ctr = self.counters.get("ctr") + 1
        c = self.clock
        body = event_body(self.dev, ctr, type, cause, c.unix(), c.uptime_ms(), c.boot, loc, data, ref, self.ep)
        signed = frame(dumps(body), self.signer.hexmac)
        self.counters.set("ctr", ctr)
        return ctr, body["id"], signed


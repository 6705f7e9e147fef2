# Build, sign and serialise device events (docs/protocol.md section 4).
import json

PROTOCOL = 1
TYPES = ("alarm", "prealarm", "cancel", "restore", "fault", "test")
# Classes that the outbox must never evict.
KEEP = ("alarm", "prealarm", "cancel")


def event_id(dev, ctr):
    return "%s-%08d" % (dev, ctr)


def ctr_of(eid):
    """The counter inside an event id, or -1 when it is not one of ours."""
    try:
        return int(eid.rsplit("-", 1)[1])
    except (ValueError, IndexError, AttributeError):
        return -1


class EventFactory:
    """Numbers events with the persisted replay counter and signs the exact bytes it returns."""

    def __init__(self, dev, signer, counters, clock):
        self.dev = dev
        self.signer = signer
        self.counters = counters
        self.clock = clock

    def make(self, type, cause, loc, data=None, ref=None):
        if type not in TYPES:
            raise ValueError("unknown event type " + str(type))
        # The number is taken (persisted) only once the frame is built, and before it is stored or
        # sent anywhere: a heap too full to build it (the app tries again later) uses up no numbers.
        ctr = self.counters.get("ctr") + 1
        eid = event_id(self.dev, ctr)
        body = {
            "v": PROTOCOL,
            "id": eid,
            "dev": self.dev,
            "ctr": ctr,
            "type": type,
            "cause": cause,
            "ts": self.clock.unix(),
            "up": self.clock.uptime_ms(),
            "boot": self.clock.boot,
            "loc": loc,
            "data": data or {},
        }
        if ref:
            body["ref"] = ref
        raw = json.dumps(body, separators=(",", ":")).encode()
        frame = self.signer.frame(raw)
        self.counters.set("ctr", ctr)
        return ctr, eid, frame


def read_signed(signer, frame):
    """A signed frame from the bridge (ack, cmd) -> dict, or None when forged or malformed."""
    body = signer.open(frame)
    if body is None:
        return None
    try:
        msg = json.loads(body)
    except ValueError:
        return None
    if not isinstance(msg, dict) or msg.get("v") != PROTOCOL:
        return None
    return msg

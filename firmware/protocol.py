# The device <-> bridge contract, spelled once (docs/protocol.md; vectors in
# docs/protocol-vectors.json). Portable: the firmware imports it as `protocol` on MicroPython, the
# bridge, provisioning, stack/, bench/ and tests as `firmware.protocol` on CPython. It imports
# nothing but json, so both can load it, and nothing else may spell a topic or a stage.
# This half is what a device needs; what only the host side needs (topic parsing, ids, causes, the
# field rules of an event body, acks and commands built, the broker's ACL lines) is protocol_host.py
# beside it, which a device never loads: measured on the 64-bit port, it would cost the panic
# button 11 KB of its 64 KB heap.
import json

VERSION = 1
PREFIX = "baochay/v1/"

# -- topics ---------------------------------------------------------------------------------
# kinds: event, telemetry, status (device -> bridge); ack, cmd (bridge -> device): protocol_host.py


def topic(dev, kind):
    return PREFIX + dev + "/" + kind


# -- device ids, install epochs and event ids --------------------------------------------------
# An epoch names one install: the device draws it at random at its first boot on a fresh filesystem
# (a new flash, a re-flash), when its counter starts again at 1. The bridge keeps its replay state
# per epoch, so a re-flashed device's alarms are new, not replays. Lower-case hex, EPOCH_LEN long.
EPOCH_LEN = 8


def valid_epoch(ep):
    return isinstance(ep, str) and len(ep) == EPOCH_LEN and not ep.strip("0123456789abcdef")


def event_id(dev, ctr, ep=None):
    """<dev>-<epoch>-<ctr as 8 digits>; without an epoch (firmware before epochs) <dev>-<ctr>."""
    if ep:
        return "%s-%s-%08d" % (dev, ep, ctr)
    return "%s-%08d" % (dev, ctr)


def ctr_of(eid):
    """The counter inside an event id, or -1 when it is not one."""
    try:
        return int(eid.rsplit("-", 1)[1])
    except (ValueError, IndexError, AttributeError):
        return -1


# -- events ---------------------------------------------------------------------------------
TYPES = ("alarm", "prealarm", "cancel", "restore", "fault", "test")
KEEP = ("alarm", "prealarm", "cancel")  # the outbox never evicts these
# -- limits -----------------------------------------------------------------------------------
MAX_PAYLOAD = 8192  # bytes of one event frame, body and signature
HEX = b"0123456789abcdef"  # a signature is 64 of these: HMAC-SHA256 in lower-case hex

# -- acks: stages, their order, and which are final --------------------------------------------
# Stages only move forward. `failed` means the 114 intake has not accepted the alarm in time, so
# the occupant must call 114; it is not final, since a late acceptance is still the better news.
# `accepted` is final: nothing after it changes what the device shows.
STAGES = ("sent", "stored", "forwarded", "failed", "accepted")  # "sent" is the device's own
ACK_STAGES = STAGES[1:]  # what the bridge sends
FINAL = ("accepted",)


def advances(new, old):
    """True when stage `new` moves an event on from `old` (None: nothing seen yet)."""
    if new not in STAGES:
        return False
    if old is None:
        return True
    if old in FINAL:
        return False
    return old not in STAGES or STAGES.index(new) > STAGES.index(old)


def durable(stage):
    """The bridge holds the event durably from `stored` on: the device's flash copy can go."""
    return stage in ACK_STAGES


# -- commands ---------------------------------------------------------------------------------
# `ota` offers an update, or with args {"confirm": version} confirms the pending one (docs/ota.md)
COMMANDS = ("identify", "self-test", "silence", "reboot", "config", "ota")
REMOTE_CONFIG = ("telemetry_s", "cancel_window_s")  # the config keys `config` may change


class Refused(Exception):
    """A frame or body the contract refuses: `reason` is a short word, counted and logged."""

    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# -- signed frames: body bytes, LF, hex HMAC-SHA256 of exactly those bytes ------------------------
# JSON as MicroPython writes it: compact, UTF-8 as it is (CPython must be told not to escape it), so
# both sides produce the same bytes. Chosen once here: a refused keyword costs an exception per call.
try:
    json.dumps("", ensure_ascii=False)

    def _text(obj):
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    def _no_constants(name):
        raise ValueError(name + " is not JSON")

    def _parse(text):
        return json.loads(text, parse_constant=_no_constants)  # type: ignore[call-arg, unused-ignore]  # CPython's json
except TypeError:  # MicroPython: no such keywords; it reads no NaN and writes UTF-8 anyway

    def _text(obj):
        return json.dumps(obj, separators=(",", ":"))

    def _parse(text):
        return json.loads(text)


def dumps(obj):
    """The compact JSON bytes every body is sent as."""
    return _text(obj).encode()


def frame(body, hexmac):
    """body bytes (no LF) + hexmac(body) -> the signed frame. hexmac returns 64 hex digits."""
    if b"\n" in body:
        raise ValueError("body contains a line feed")
    sig = hexmac(body)
    if isinstance(sig, str):
        sig = sig.encode()
    n = len(body)
    out = bytearray(n + 65)  # one buffer, not a copy per concatenation: the heap is small
    out[:n] = body
    out[n] = 10
    out[n + 1:] = sig
    return out


def split_frame(payload, max_payload=MAX_PAYLOAD):
    """payload -> (body, sig) before any check of the signature; Refused when it is not a frame."""
    if not isinstance(payload, (bytes, bytearray)):
        raise Refused("unsigned")
    if len(payload) > max_payload:
        raise Refused("too-large", "%d bytes > %d" % (len(payload), max_payload))
    i = payload.find(b"\n")
    if i < 0:
        raise Refused("unsigned")
    sig = bytes(payload[i + 1:])
    if len(sig) != 64 or sig.strip(HEX):
        raise Refused("bad-signature-format")
    return bytes(payload[:i]), sig


def equal(a, b):
    """Constant-time comparison, so a forger learns nothing from timing."""
    if len(a) != len(b):
        return False
    r = 0
    for x, y in zip(a, b):
        r |= x ^ y
    return r == 0


def open_frame(payload, hexmac, max_payload=MAX_PAYLOAD):
    """A signed frame -> its body bytes, or Refused when malformed or the signature fails."""
    body, sig = split_frame(payload, max_payload)
    want = hexmac(body)
    if isinstance(want, str):
        want = want.encode()
    if not equal(want, sig):
        raise Refused("bad-signature")
    return body


def loads_object(body):
    """Strict JSON object (no NaN or Infinity) -> dict; Refused("bad-json") otherwise."""
    try:
        obj = _parse(bytes(body).decode())
    except (ValueError, RuntimeError):  # bad UTF-8 or JSON; nesting too deep
        raise Refused("bad-json")
    if not isinstance(obj, dict):
        raise Refused("bad-json", "not an object")
    return obj


# -- event bodies (the field rules a receiver checks are in protocol_host.py) -------------------------
def event_body(dev, ctr, type, cause, ts, up, boot, loc, data=None, ref=None, ep=None):
    """The body dict of one event, fields in the order they go on the wire."""
    body = {"v": VERSION, "id": event_id(dev, ctr, ep), "dev": dev, "ctr": ctr, "type": type,
            "cause": cause, "ts": ts, "up": up, "boot": boot, "loc": loc, "data": data or {}}
    if ep:
        body["ep"] = ep
    if ref:
        body["ref"] = ref
    return body


# -- status (retained; authenticated by the broker, not signed) ---------------------------------
def birth_body(fw, board, boot, up, ts):
    return {"v": VERSION, "state": "online", "fw": fw, "board": board, "boot": boot, "up": up, "ts": ts}


OFFLINE = {"v": VERSION, "state": "offline"}  # the last will, and what a clean disconnect publishes


# -- acks and commands (bridge -> device; protocol_host.py builds them) -------------------------
def check_message(body):
    """An authentic ack or command body -> dict; Refused unless a JSON object of this version."""
    msg = loads_object(body)
    if msg.get("v") != VERSION:
        raise Refused("bad-version", repr(msg.get("v"))[:20])
    return msg


def check_ack(msg, dev, ep=None):
    """An ack for device `dev` in install `ep` -> (event id, stage, incident or None, reason or None).
    The id binds the ack to one frame of this install: an ack for an earlier install's event (the
    same counter, before a re-flash) is refused as "other-epoch" and can never clear a new alarm."""
    eid = msg.get("id")
    if not isinstance(eid, str) or not eid.startswith(dev + "-") or ctr_of(eid) < 0:
        raise Refused("bad-field", "id must be an event id of this device")
    if eid != event_id(dev, ctr_of(eid), ep):
        raise Refused("other-epoch", eid[len(dev) + 1:][:24])
    stage = msg.get("stage")
    if stage not in ACK_STAGES:
        raise Refused("bad-field", "stage must be one of " + ",".join(ACK_STAGES))
    inc = msg.get("incident")
    why = msg.get("reason")
    return eid, stage, inc if isinstance(inc, str) else None, why if isinstance(why, str) else None


def check_command(msg):
    """A command -> (name, ctr, args). Whether ctr is new is the device's to decide."""
    ctr = msg.get("ctr")
    if not isinstance(ctr, int) or isinstance(ctr, bool) or ctr < 0:
        raise Refused("bad-field", "ctr must be a non-negative int")
    name = msg.get("cmd")
    if name not in COMMANDS:
        raise Refused("unknown-command", str(name)[:32])
    args = msg.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise Refused("bad-field", "args must be an object")
    return name, ctr, args

# The host's half of the contract in protocol.py: topics parsed and subscribed to, the device-id
# rule, event causes and the field rules of an event body (section 4), acks and commands built
# (sections 7, 8), and the broker ACL lines. Portable and pure like protocol.py (the golden vectors
# check it on both interpreters), but kept apart: only the bridge, provisioning, stack/ and the
# tests load it, so a device's heap does not pay for it.
# It re-exports protocol.py, so a host module needs one import: `from firmware import protocol_host`.
try:  # as firmware.protocol_host on CPython, so that Refused is the bridge's one class
    from . import protocol as p
    from .protocol import *  # noqa: F403
except ImportError:  # beside protocol.py on sys.path (MicroPython, the core tests)
    import protocol as p  # type: ignore[import-not-found, no-redef, unused-ignore]
    from protocol import *  # type: ignore[import-not-found, unused-ignore]  # noqa: F403


DEVICE_KINDS = ("event", "telemetry", "status")  # device -> bridge
BRIDGE_KINDS = ("ack", "cmd")  # bridge -> device
# Firmware updates (docs/ota.md) on topics of their own, served by the bridge's OTA worker on its own
# connection, apart from the alarm path: a device's reports and chunk requests, and the chunks.
OTA_REQUEST = "ota"  # device -> bridge
OTA_DATA = "otadata"  # bridge -> device
BRIDGE_NS = "bridge"  # PREFIX + "bridge/<bridge-id>/(state|health)"


def every(kind):
    """The subscription filter for one kind from every device: PREFIX + "+/" + kind."""
    return p.PREFIX + "+/" + kind


def bridge_topic(bridge_id, kind):
    return p.PREFIX + BRIDGE_NS + "/" + bridge_id + "/" + kind


ALL = p.PREFIX + "#"


# -- device ids ----------------------------------------------------------------------------------
ID_MIN, ID_MAX = 3, 32
ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
# Never a device: "bridge" is the bridges' topic namespace (BRIDGE_NS) and their broker user, "watcher"
# the read-only observer's broker user. A device by one of these names would log in as that service.
RESERVED_IDS = ("bridge", "watcher")


def valid_id(s):
    """A device id: 3..32 of [a-z0-9-], not a reserved name; it is the MQTT client id and user name,
    so ACLs use %u."""
    if not isinstance(s, str) or not ID_MIN <= len(s) <= ID_MAX or s in RESERVED_IDS:
        return False
    for c in s:
        if c not in ID_CHARS:
            return False
    return True


def split_topic(t, kinds=DEVICE_KINDS):
    """PREFIX + "<id>/<kind>" -> (id, kind); Refused("bad-topic") otherwise."""
    if isinstance(t, str) and t.startswith(p.PREFIX):
        parts = t[len(p.PREFIX):].split("/")
        if len(parts) == 2 and valid_id(parts[0]) and parts[1] in kinds:
            return parts[0], parts[1]
    raise p.Refused("bad-topic")


# -- events ---------------------------------------------------------------------------------
SENSOR_CAUSES = ("heat", "smoke", "multi")
# A fire alarm panel's relays through the transmitter's supervised inputs (docs/transmitter.md):
# `panel` its fire relay (an alarm, restored when the relay opens again), `panel-fault` its own
# fault relay, and the wiring faults of a supervised line. None of them is a sensor's.
PANEL_CAUSES = ("panel",)
PANEL_FAULT_CAUSES = ("panel-fault", "line-open", "line-short")
ALARM_CAUSES = ("button",) + SENSOR_CAUSES + PANEL_CAUSES
# `update-failed`: an update was rolled back, or its boots never came online and safe mode started the
# last good application instead (docs/ota.md)
FAULT_CAUSES = ("config", "sensor", "i2c", "battery", "tamper", "gps", "chamber", "watchdog", "outbox",
                "network", "update-failed") + PANEL_FAULT_CAUSES
CAUSES = {
    "alarm": ALARM_CAUSES,
    "prealarm": ("button",) + SENSOR_CAUSES,  # a panel's relay is closed or open: no prealarm
    "fault": FAULT_CAUSES,
    "restore": FAULT_CAUSES + SENSOR_CAUSES + PANEL_CAUSES,  # a fault cleared, a sensor or panel alarm cleared
    "test": ("selftest", "periodic"),  # periodic: every test_s seconds, proof of a live path
}  # cancel: any short word (the firmware sends "button")
LOC_SOURCES = ("gps", "fixed")

# -- limits a receiver checks -------------------------------------------------------------------
MAX_CAUSE = 32
MAX_REASON = 200  # characters of an ack's reason
MAX_INCIDENT = 64  # characters of a 114 incident id the bridge passes on to a device


def valid_incident(s):
    """An incident id from the 114 side that may go into an ack: 1..MAX_INCIDENT printable ASCII."""
    return isinstance(s, str) and 0 < len(s) <= MAX_INCIDENT and all(" " < c <= "~" for c in s)


# -- ranges: every number and string a receiver takes (docs/protocol.md section 11) -------------
# Each bound sits well beyond what any device sends and within what the bridge's database (64-bit
# integers) and its sinks' dates and JSON can hold, so that a value past one is a refusal with a
# reason here, never an error further on. The table in docs/protocol.md lists these.
CTR_MAX = (1 << 63) - 1  # an event counter: SQLite's largest integer
TS_MAX = (1 << 32) - 1  # Unix seconds: 2106-02-07, a date every sink can write
UP_MAX = 1 << 40  # milliseconds of uptime: 34 years
BOOT_MAX = (1 << 32) - 1  # boots: a 32-bit counter
AGE_MAX = (1 << 32) - 1  # seconds since a GPS fix
ACC_MAX = 20000000  # metres of accuracy: half the Earth's circumference
HEAP_MAX = (1 << 32) - 1  # bytes of heap: a 32-bit address space
RSSI_MIN, RSSI_MAX = -128, 127  # dBm: a radio reports a signed byte
BATT_V_MAX = 60  # volts: no cell or pack of these devices comes near it
OUTBOX_MAX = 65535  # events waiting on the device: more files than its flash holds
NUM_MAX = 1e15  # any other number (readings, evidence): exact as a double, beyond any sensor
MAX_TEXT = 500  # characters of a string inside `data` (a fault's detail) or telemetry readings
MAX_KEY = 32  # characters of a key inside `data` or `r`
MAX_NAME = 32  # characters of a firmware version or a board name
DATA_DEPTH = 4  # nested objects and lists, `data` itself the first (`hist` is a list of lists)
DATA_KEYS = 32  # keys of one object inside `data` or `r`
DATA_ITEMS = 64  # items of one list inside `data` or `r`
WORD_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"  # a cancel's cause, keys
NAME_CHARS = WORD_CHARS + ".+"  # firmware versions ("0.1.0+g1a2b"), board names
DIGITS = "0123456789"


# -- broker ACL ---------------------------------------------------------------------------------
def acl_device():
    """Mosquitto `pattern` lines: each device (user name = device id) writes only its own topics."""
    lines = ["pattern write " + p.topic("%u", k) for k in DEVICE_KINDS + (OTA_REQUEST,)]
    lines += ["pattern read " + p.topic("%u", k) for k in BRIDGE_KINDS + (OTA_DATA,)]
    return lines


def acl_bridge():
    """Mosquitto `topic` lines for a bridge account: reads every device, writes acks and commands."""
    lines = ["topic read " + every(k) for k in DEVICE_KINDS + (OTA_REQUEST,)]
    lines += ["topic write " + every(k) for k in BRIDGE_KINDS + (OTA_DATA,)]
    lines.append("topic readwrite " + p.PREFIX + BRIDGE_NS + "/#")
    return lines


def acl_watcher():
    """A read-only account that sees every frame (for people watching a demo or a rig)."""
    return ["topic read " + ALL]


# -- field rules ----------------------------------------------------------------------------------
def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _need(obj, key, ok, what):
    if key not in obj:
        raise p.Refused("missing-field", key)
    v = obj[key]
    if not ok:
        raise p.Refused("bad-field", key + " must be " + what)
    return v


def _get(obj, key):
    return obj[key] if key in obj else None


def _range(obj, key, lo, hi, num=False, null=False, need=True, name=None):
    """obj[key]: an int (any number when num) within lo..hi, or null when allowed; when absent,
    missing-field if needed, else None. NaN and the infinities fail every comparison, so no bound
    lets them through."""
    if key not in obj:
        if need:
            raise p.Refused("missing-field", name or key)
        return None
    v = obj[key]
    if (v is None and null) or ((_num(v) if num else _int(v)) and lo <= v <= hi):
        return v
    raise p.Refused("bad-field", "%s must be %s%s %s..%s" % (
        name or key, "null or " if null else "", "a number" if num else "an int", lo, hi))


def _chars_in(s, chars):
    for c in s:
        if c not in chars:
            return False
    return True


def valid_word(s, most=MAX_KEY, chars=WORD_CHARS):
    """1..most characters of `chars` (letters, digits, "_", "-" unless told)."""
    return isinstance(s, str) and 0 < len(s) <= most and _chars_in(s, chars)


def valid_text(s, most=MAX_TEXT):
    """At most `most` characters, none a control character or half of a surrogate pair: what a log
    line, a database and an XML document all take (any script: a detail may be in Vietnamese)."""
    if not isinstance(s, str) or len(s) > most:
        return False
    for c in s:
        o = ord(c)
        if o < 32 or 127 <= o < 160 or 0xD800 <= o < 0xE000:
            return False
    return True


def valid_event_id(s, dev):
    """An event id of device `dev`: <dev>-[<epoch>-]<counter, 8 to 19 digits, at most CTR_MAX>."""
    if not isinstance(s, str) or not s.startswith(dev + "-"):
        return False
    rest = s[len(dev) + 1:]
    if len(rest) > 9 and rest[8] == "-" and p.valid_epoch(rest[:8]):
        rest = rest[9:]
    return 8 <= len(rest) <= 19 and _chars_in(rest, DIGITS) and int(rest) <= CTR_MAX


def tree_fault(v, depth=0):
    """What is wrong with a free-form value (an event's `data`, telemetry's `r`), or None: objects
    of at most DATA_KEYS word keys, lists of at most DATA_ITEMS, DATA_DEPTH levels of them, and
    leaves null, true/false, a number within +-NUM_MAX or a text (valid_text)."""
    if v is None or isinstance(v, bool):
        return None
    if _num(v):
        return None if -NUM_MAX <= v <= NUM_MAX else "a number beyond +-%s" % NUM_MAX
    if isinstance(v, str):
        return None if valid_text(v) else "a string over %d characters or with a control character" % MAX_TEXT
    if not isinstance(v, (dict, list)):
        return "a value that is not JSON"
    if depth >= DATA_DEPTH:
        return "nested deeper than %d levels" % DATA_DEPTH
    if isinstance(v, list):
        if len(v) > DATA_ITEMS:
            return "a list of over %d items" % DATA_ITEMS
        items = v
    else:
        if len(v) > DATA_KEYS:
            return "an object of over %d keys" % DATA_KEYS
        for k in v:
            if not valid_word(k):
                return "a key that is not 1..%d letters, digits, _ or -" % MAX_KEY
        items = list(v.values())  # at most DATA_KEYS
    for x in items:
        why = tree_fault(x, depth + 1)
        if why:
            return why
    return None


def _tree(obj, key):
    v = _get(obj, key)
    _need(obj, key, isinstance(v, dict), "an object")
    why = tree_fault(v)
    if why:
        raise p.Refused("bad-field", key + ": " + why)
    return v


def _version(obj):
    v = _get(obj, "v")
    if not _int(v) or v != p.VERSION:
        raise p.Refused("bad-version", repr(v)[:20])


# -- event bodies ---------------------------------------------------------------------------------
def check_event(ev, dev=None):
    """An authentic event body (dict) against section 4, every field within its range (section 11);
    Refused with the reason otherwise. dev: the device id of the topic it came on, which the body must
    name. Fields it does not know are left alone (the bridge stores the body as it came)."""
    _version(ev)
    d = _get(ev, "dev")
    _need(ev, "dev", valid_id(d), "a device id")
    ctr = _range(ev, "ctr", 0, CTR_MAX)
    ep = _get(ev, "ep")
    if "ep" in ev:
        _need(ev, "ep", p.valid_epoch(ep), "%d lower-case hex digits" % p.EPOCH_LEN)
    eid = _get(ev, "id")
    _need(ev, "id", isinstance(eid, str), "a string")
    if eid != p.event_id(d, ctr, ep):
        raise p.Refused("bad-field", "id must be <dev>-<ep>-<ctr as 8 digits>" if ep else
                        "id must be <dev>-<ctr as 8 digits>")
    t = _get(ev, "type")
    _need(ev, "type", t in p.TYPES, "an event type")
    c = _get(ev, "cause")
    if t == "cancel":
        _need(ev, "cause", valid_word(c, MAX_CAUSE), "a word of 1..%d letters, digits, _ or -" % MAX_CAUSE)
    else:
        _need(ev, "cause", isinstance(c, str) and c in CAUSES[t], "a " + t + " cause")
    _range(ev, "ts", 0, TS_MAX, null=True)
    _range(ev, "up", 0, UP_MAX)
    _range(ev, "boot", 0, BOOT_MAX)
    loc = _get(ev, "loc")
    _need(ev, "loc", isinstance(loc, dict), "an object")
    _range(loc, "lat", -90, 90, num=True, name="loc.lat")
    _range(loc, "lon", -180, 180, num=True, name="loc.lon")
    _range(loc, "acc", 0, ACC_MAX, num=True, name="loc.acc")
    _need(loc, "src", _get(loc, "src") in LOC_SOURCES, "gps or fixed")
    _range(loc, "age", 0, AGE_MAX, name="loc.age")
    _tree(ev, "data")
    if t == "cancel" or "ref" in ev:
        ref = _get(ev, "ref")
        _need(ev, "ref", valid_event_id(ref, d), "an event id of this device")
        if ref == eid:
            raise p.Refused("bad-field", "ref must name another event")
    if dev is not None and d != dev:
        raise p.Refused("device-mismatch")
    return ev


# -- telemetry and status (unsigned: the broker vouches for the sender) ------------------------------
# `v` is needed; every other field the bridge knows is checked when present (a device may leave one
# out: a board without a battery has none to report), and fields it does not know are ignored, so a
# v1 device may add one. The bridge writes only what passed.
STATES = ("online", "offline")


def _dev(obj, dev):
    if "dev" in obj:
        _need(obj, "dev", valid_id(obj["dev"]), "a device id")
        if dev is not None and obj["dev"] != dev:
            raise p.Refused("device-mismatch")


def _name(obj, key):
    if key in obj and not valid_word(obj[key], MAX_NAME, NAME_CHARS):
        raise p.Refused("bad-field", "%s must be 1..%d letters, digits or ._+-" % (key, MAX_NAME))


def check_telemetry(t, dev=None):
    """A telemetry body (section 6) -> t, every known field within its range; Refused otherwise."""
    _version(t)
    _dev(t, dev)
    _range(t, "up", 0, UP_MAX, need=False)
    _range(t, "ts", 0, TS_MAX, null=True, need=False)
    _range(t, "boot", 0, BOOT_MAX, need=False)
    _range(t, "heap_free", 0, HEAP_MAX, need=False)
    _range(t, "heap_peak", 0, HEAP_MAX, need=False)
    _range(t, "rssi", RSSI_MIN, RSSI_MAX, null=True, need=False)
    _range(t, "outbox", 0, OUTBOX_MAX, need=False)
    b = _get(t, "batt")
    if b is not None:
        _need(t, "batt", isinstance(b, dict), "null or an object")
        _range(b, "v", 0, BATT_V_MAX, num=True, need=False, name="batt.v")
        _range(b, "pct", 0, 100, num=True, need=False, name="batt.pct")
    if "r" in t:
        _tree(t, "r")
    return t


def check_status(s, dev=None):
    """A status body (section 5): the birth or the last will -> s; Refused otherwise."""
    _version(s)
    _dev(s, dev)
    _need(s, "state", _get(s, "state") in STATES, "online or offline")
    _name(s, "fw")
    _name(s, "board")
    _range(s, "boot", 0, BOOT_MAX, need=False)
    _range(s, "up", 0, UP_MAX, need=False)
    _range(s, "ts", 0, TS_MAX, null=True, need=False)
    return s


# -- acks and commands (bridge -> device) ---------------------------------------------------
def ack_body(eid, stage, incident=None, reason=None, ts=0):
    if stage not in p.ACK_STAGES:
        raise ValueError("unknown stage %r" % (stage,))
    body = {"v": p.VERSION, "id": eid, "stage": stage}
    if stage == "accepted" and incident:
        body["incident"] = incident
    if stage == "failed":
        body["reason"] = (reason or "delivery failed")[:MAX_REASON]
    body["ts"] = ts
    return body


def command_body(cmd, ctr, args=None):
    if cmd not in p.COMMANDS:
        raise ValueError("unknown command %r (known: %s)" % (cmd, ", ".join(p.COMMANDS)))
    return {"v": p.VERSION, "cmd": cmd, "ctr": ctr, "args": args or {}}



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
ALARM_CAUSES = ("button", "heat", "smoke", "multi")
SENSOR_CAUSES = ("heat", "smoke", "multi")
FAULT_CAUSES = ("config", "sensor", "i2c", "battery", "tamper", "gps", "chamber", "watchdog", "outbox", "network")
CAUSES = {
    "alarm": ALARM_CAUSES,
    "prealarm": ALARM_CAUSES,
    "fault": FAULT_CAUSES,
    "restore": FAULT_CAUSES + SENSOR_CAUSES,  # a fault cleared, or a sensor alarm cleared
    "test": ("selftest",),
}  # cancel: any short word (the firmware sends "button")
LOC_SOURCES = ("gps", "fixed")

# -- limits a receiver checks -------------------------------------------------------------------
MAX_CAUSE = 32
MAX_REASON = 200  # characters of an ack's reason
MAX_INCIDENT = 64  # characters of a 114 incident id the bridge passes on to a device


def valid_incident(s):
    """An incident id from the 114 side that may go into an ack: 1..MAX_INCIDENT printable ASCII."""
    return isinstance(s, str) and 0 < len(s) <= MAX_INCIDENT and all(" " < c <= "~" for c in s)
CTR_MAX = (1 << 63) - 1


# -- broker ACL ---------------------------------------------------------------------------------
def acl_device():
    """Mosquitto `pattern` lines: each device (user name = device id) writes only its own topics."""
    lines = ["pattern write " + p.topic("%u", k) for k in DEVICE_KINDS]
    lines += ["pattern read " + p.topic("%u", k) for k in BRIDGE_KINDS]
    return lines


def acl_bridge():
    """Mosquitto `topic` lines for a bridge account: reads every device, writes acks and commands."""
    lines = ["topic read " + every(k) for k in DEVICE_KINDS]
    lines += ["topic write " + every(k) for k in BRIDGE_KINDS]
    lines.append("topic readwrite " + p.PREFIX + BRIDGE_NS + "/#")
    return lines


def acl_watcher():
    """A read-only account that sees every frame (for people watching a demo or a rig)."""
    return ["topic read " + ALL]


# -- event bodies ---------------------------------------------------------------------------------
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


def check_event(ev, dev=None):
    """An authentic event body (dict) against section 4; Refused with the reason otherwise.
    dev: the device id of the p.topic it came on, which the body must name."""
    v = _get(ev, "v")
    if not _int(v) or v != p.VERSION:
        raise p.Refused("bad-version", repr(v)[:20])
    d = _get(ev, "dev")
    _need(ev, "dev", valid_id(d), "a device id")
    ctr = _get(ev, "ctr")
    _need(ev, "ctr", _int(ctr) and 0 <= ctr <= CTR_MAX, "a non-negative int")
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
        _need(ev, "cause", isinstance(c, str) and 0 < len(c) <= MAX_CAUSE, "a short string")
    else:
        _need(ev, "cause", isinstance(c, str) and c in CAUSES[t], "a " + t + " cause")
    ts = _get(ev, "ts")
    _need(ev, "ts", ts is None or (_int(ts) and ts >= 0), "int or null")
    for k in ("up", "boot"):
        x = _get(ev, k)
        _need(ev, k, _int(x) and x >= 0, "a non-negative int")
    loc = _get(ev, "loc")
    _need(ev, "loc", isinstance(loc, dict), "an object")
    x = _get(loc, "lat")
    _need(loc, "lat", _num(x) and -90 <= x <= 90, "latitude")
    x = _get(loc, "lon")
    _need(loc, "lon", _num(x) and -180 <= x <= 180, "longitude")
    x = _get(loc, "acc")
    _need(loc, "acc", _num(x) and x >= 0, "metres >= 0")
    _need(loc, "src", _get(loc, "src") in LOC_SOURCES, "gps or fixed")
    x = _get(loc, "age")
    _need(loc, "age", _int(x) and x >= 0, "seconds >= 0")
    _need(ev, "data", isinstance(_get(ev, "data"), dict), "an object")
    if t == "cancel" or "ref" in ev:
        ref = _get(ev, "ref")
        _need(ev, "ref", isinstance(ref, str) and ref.startswith(d + "-"), "an event id of this device")
        if ref == eid:
            raise p.Refused("bad-field", "ref must name another event")
    if dev is not None and d != dev:
        raise p.Refused("device-mismatch")
    return ev


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



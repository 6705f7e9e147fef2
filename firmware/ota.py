# An update the bridge offers (docs/ota.md): checked against this device, fetched into the inactive
# slot in chunks over MQTT (offset-based, so a power cut or a lost link resumes where it stopped),
# verified against the offer's SHA-256, unpacked, and made pending for the boot selector (slots.py).
# Loaded only when an offer comes, never at boot (a download a reboot stopped goes on when the
# bridge offers it again): no heap otherwise.
#
# The offer (a signed `ota` command) names version, sv (security version), size, sha256, boards,
# min_base and confirm_s. The device asks for the chunk at `off` on its `ota` topic; the bridge sends
# it on `otadata` as 4 bytes of offset (big-endian) and the bytes. One chunk is in flight at a time.
import json
import os
import sys
from hashlib import sha256

import slots
from compat import makedirs, ticks_diff, ticks_ms
from protocol import dumps, topic

_DL = "/ota-download.bin"  # the bytes so far, appended chunk by chunk
_OFFER = "/ota-download.json"  # the offer they belong to
_ASK_MS = 4000  # a chunk that has not come within this is asked for again
_REPORT_PCT = 10  # progress reported on the ota topic this often (percent)
_MAX_SIZE = 2 * 1024 * 1024  # what a slot can hold on the smallest flash of boards.yaml
# Room a download needs once this module is loaded: MicroPython heap free after a collection, and,
# where the board reports it (an ESP32), the largest block of the system heap. With less, the
# download's allocations make the heap grow into the system heap and Wi-Fi stops (seen on the
# emulated ESP32, docs/ota.md); the offer is refused instead, and the device goes on protecting.
_FREE_MIN = 24 * 1024
_SYS_MIN = 16 * 1024


def _hex(b):
    return "".join("%02x" % x for x in b)


def _version(text):
    try:
        return tuple(int(x) for x in text.split("."))
    except (ValueError, AttributeError):
        return None


def refusal(app, offer, state):
    """Why this device does not take the offer, or None. The security version floor is the
    device's own: no offer can lower it."""
    v = offer.get("version")
    if not isinstance(v, str) or _version(v) is None or len(_version(v)) != 3:
        return "bad-offer", "version"
    for k in ("sv", "size", "confirm_s"):
        if not isinstance(offer.get(k), int) or offer[k] < 0:
            return "bad-offer", k
    h = offer.get("sha256")
    if not isinstance(h, str) or len(h) != 64:
        return "bad-offer", "sha256"
    if app.board.name not in (offer.get("boards") or ()):
        return "wrong-board", "this board is " + app.board.name
    floor = state.get("security_floor", 0)
    if offer["sv"] < floor:
        return "downgrade", "security version %d is below this device's %d" % (offer["sv"], floor)
    base = _version(offer.get("min_base") or "0.0.0")
    if base is None or tuple(sys.implementation.version[:3]) < base:
        return "base-too-old", "needs MicroPython %s" % offer.get("min_base")
    if not 0 < offer["size"] <= _MAX_SIZE:
        return "too-large", "%d bytes" % offer["size"]
    if state.get("pending_slot"):
        return "busy", "an update is pending its confirmation"
    return None


def no_room(app):
    """Why a download may not start now for want of memory, or None (asked before a download
    starts, not of one under way, which has taken its share already)."""
    import gc

    gc.collect()
    free = gc.mem_free() if hasattr(gc, "mem_free") else _FREE_MIN  # CPython (the core tests): no cap
    sh = app.board.system_heap()
    if free < _FREE_MIN or (sh and sh[1] < _SYS_MIN):
        return "low-memory", "%d bytes of heap free (needs %d), system heap block %s (needs %d)" % (
            free, _FREE_MIN, sh[1] if sh else "-", _SYS_MIN)
    return None


def _short(app):
    """During a download: why it must stop for the system heap (Wi-Fi and lwIP live there), or None.
    On the emulated ESP32 it has been seen to fall from 35 KB to under 1 KB once chunks flowed."""
    sh = app.board.system_heap()
    if sh and sh[1] < _SYS_MIN:
        return "system heap block %d bytes (needs %d): stopped to keep the network" % (sh[1], _SYS_MIN)
    return None


# -- the slots (their state: slots.py) ------------------------------------------------------------
def inactive(s):
    """The slot a download may write: neither the one running nor the confirmed one."""
    for n in ("a", "b"):
        if n != s.get("booting_slot") and n != s.get("confirmed_slot"):
            return n
    return "a"  # not reached: two slots, and at most two of them in use


def install(root, slot, version, sv, confirm_s):
    """A verified slot becomes pending: the next boot runs it, once."""
    s = slots.load(root)
    s["pending_slot"] = slot
    s["pending_version"] = version
    s["pending_security"] = sv
    s["pending_confirm_s"] = confirm_s
    s["pending_boots"] = 0
    s["pending_failure"] = None
    slots.write(s, root)


def confirm(app, version):
    """The bridge's signed confirmation: the pending update becomes the confirmed one, and its
    security version the device's floor. Said again for a version already confirmed (the bridge
    asks again when it did not hear the first answer)."""
    import asyncio

    s = slots.load(app.dir)
    p = s.get("pending_slot")
    if p and p == s.get("booting_slot") and version == s.get("pending_version"):
        s["confirmed_slot"] = p
        s["confirmed_version"] = version
        s["security_floor"] = max(s.get("security_floor", 0), s.get("pending_security", 0))
        s["pending_slot"] = s["pending_failure"] = None
        s["pending_boots"] = 0
        slots.write(s, app.dir)
        app.update[0] = None
    elif version != app.FW_VERSION:
        app.console.emit("rejected", topic="cmd", reason="not-pending", detail=str(version)[:20])
        return
    app.console.emit("ota", state="confirmed", version=version)
    asyncio.create_task(app.mq.publish(topic(app.dev, "ota"), dumps(
        {"v": 1, "state": "confirmed", "version": version}), qos=1))


async def unconfirmed(app):
    """A pending update the bridge did not confirm in time: the next boot returns to the previous
    slot (slots.boot), and reports why."""
    s = slots.load(app.dir)
    if s.get("pending_slot"):
        s["pending_failure"] = "not confirmed within %d s" % s.get("pending_confirm_s", 0)
        slots.write(s, app.dir)
    app.update[0] = None
    app.console.emit("ota", state="unconfirmed")
    await app.reboot()


def busy(app):
    """Why no update may download or install now (an alarm goes first), or None."""
    if len(app.delivery):
        return "undelivered"
    if app.cp.alarm_id and app.cp.indicator not in ("idle", "cancelled"):
        return "alarm"
    if app.sensing and app.incidents.first:
        return "incident"
    if app.panel and app.panel.latest_alarm():
        return "panel"
    return None


class Download:
    def __init__(self, app, offer):
        self.app = app
        self.offer = offer
        self.root = app.dir
        self.off = 0
        self.h = sha256()
        self.got = None  # a chunk handed over by the MQTT client, taken by run()
        self.asked = None
        self.done = False
        self._pct = -1
        self._waiting = None

    # -- start, resume ------------------------------------------------------------------------
    def begin(self):
        """Start, or go on with the bytes already on flash for this same offer. The boot selector's
        state file is written first: a device looks for a download to resume only when it has one."""
        slots.write(slots.load(self.root), self.root)
        # the chunks' topic (protocol_host.OTA_DATA), subscribed to only while a download needs it
        self.app.mq.subscribe(topic(self.app.dev, "ota") + "data", 0)  # a lost chunk is asked for again
        old = _load(self.root)
        if old and old.get("sha256") == self.offer["sha256"]:
            try:
                with open(self.root + _DL, "rb") as f:
                    buf = bytearray(512)
                    while True:
                        n = f.readinto(buf)
                        if not n:
                            break
                        self.h.update(buf[:n] if n < 512 else buf)
                        self.off += n
            except OSError:
                self.off = 0
                self.h = sha256()
        if self.off:
            self.app.console.emit("ota", state="resumed", version=self.offer["version"], off=self.off)
        else:
            with open(self.root + _DL, "wb"):
                pass
        with open(self.root + _OFFER, "w") as f:
            json.dump(self.offer, f)
        if self.off > self.offer["size"]:
            self.fail("bad-hash", "more bytes than offered")

    def put(self, payload):
        """From the MQTT client: one chunk. Kept for run(); one is ever in flight."""
        if len(payload) > 4:
            self.got = payload

    # -- the loop --------------------------------------------------------------------------------
    async def run(self):
        import asyncio

        a = self.app
        while not self.done:
            why = busy(a)
            if why:  # an alarm pre-empts the download: nothing asked until it is delivered
                if why != self._waiting:
                    self._waiting = why
                    await self.report("waiting", reason=why)
                await asyncio.sleep_ms(500)
                continue
            self._waiting = None
            got, self.got = self.got, None
            if got is not None:
                self._take(got)
                if self.done:
                    break
            now = ticks_ms()
            if a.mq.connected and (got is not None or self.asked is None or ticks_diff(now, self.asked) >= _ASK_MS):
                self.asked = now
                if self.off >= self.offer["size"]:
                    await self._finish()
                    break
                why = _short(a)  # before each chunk: one the network stack cannot take is not asked for
                if why:
                    self.fail("low-memory", why)
                    break
                await self.report("downloading")
            await asyncio.sleep_ms(5 if got is not None else 50)

    def _take(self, got):
        off = (got[0] << 24) | (got[1] << 16) | (got[2] << 8) | got[3]
        if off != self.off:
            return  # a repeat of an earlier chunk: the one asked for comes next
        data = memoryview(got)[4:]
        if self.off + len(data) > self.offer["size"]:
            self.fail("bad-hash", "more bytes than offered")
            return
        with open(self.root + _DL, "ab") as f:
            f.write(data)
        self.h.update(data)
        self.off += len(data)

    async def report(self, state, **fields):
        o = self.offer
        msg = {"v": 1, "state": state, "version": o["version"], "sha256": o["sha256"], "off": self.off,
               "size": o["size"]}
        msg.update(fields)
        pct = self.off * 100 // o["size"] if o["size"] else 100
        if state != "downloading" or pct // _REPORT_PCT != self._pct // _REPORT_PCT:  # the console: in steps
            self._pct = pct
            self.app.console.emit("ota", state=state, version=o["version"], pct=pct, **fields)
        # a chunk request is asked again if lost; a state the bridge must hear of is not
        await self.app.mq.publish(topic(self.app.dev, "ota"), dumps(msg), qos=0 if state == "downloading" else 1)

    def fail(self, reason, detail):
        import asyncio

        self.done = True
        _clear(self.root)
        asyncio.create_task(self.report("failed", reason=reason, detail=detail))

    async def _finish(self):
        o = self.offer
        if _hex(self.h.digest()) != o["sha256"]:
            self.fail("bad-hash", "the downloaded bytes do not match the offer")
            return
        slot = inactive(slots.load(self.root))
        try:
            _unpack(self.root + _DL, "%s/ota-slot-%s" % (self.root, slot))
        except (OSError, ValueError) as e:
            self.fail("install", str(e)[:80])
            return
        install(self.root, slot, o["version"], o["sv"], o["confirm_s"])
        _clear(self.root)
        self.done = True
        await self.report("pending", slot=slot)
        self.app.console.emit("ota", state="installed", version=o["version"], slot=slot)
        await self.app.reboot()


def _load(root):
    try:
        with open(root + _OFFER) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _clear(root):
    for p in (_DL, _OFFER):
        try:
            os.remove(root + p)
        except OSError:
            pass


def _rmtree(d):
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = d + "/" + n
        try:
            os.remove(p)
        except OSError:
            _rmtree(p)
    try:
        os.rmdir(d)
    except OSError:
        pass


def _unpack(src, dest):
    """The payload's records (name length, name, 4-byte size, bytes) into the slot, the `ok` marker
    last: a power cut in the middle leaves a slot the selector will not boot."""
    _rmtree(dest)
    makedirs(dest)
    buf = bytearray(512)
    with open(src, "rb") as f:
        while True:
            b = f.read(1)
            if not b:
                break
            name = f.read(b[0]).decode()
            if not name or ".." in name or name.startswith("/"):
                raise ValueError("bad part name")
            sz = f.read(4)
            if len(sz) != 4:
                raise ValueError("truncated")
            left = (sz[0] << 24) | (sz[1] << 16) | (sz[2] << 8) | sz[3]
            p = dest + "/" + name
            if "/" in name:
                makedirs(p.rsplit("/", 1)[0])
            with open(p, "wb") as out:
                while left:
                    n = f.readinto(memoryview(buf)[:min(left, 512)])
                    if not n:
                        raise ValueError("truncated")
                    out.write(memoryview(buf)[:n])
                    left -= n
    with open(dest + "/installed.ok", "w") as f:
        f.write("1")


def offer(app, args):
    """A signed `ota` command: refused with its reason on the ota topic, or downloaded (from the
    offset reached before, when it is the offer the bytes on flash belong to)."""
    import asyncio

    state = slots.load(app.dir)
    if args.get("version") == app.FW_VERSION and not state.get("pending_slot"):
        _clear(app.dir)  # installed already (a power cut came before the download was cleared)
        confirm(app, app.FW_VERSION)  # running it already: nothing to fetch
        return
    why = refusal(app, args, state)
    d = Download(app, args if why is None else _blank(args))
    if why:
        return _refuse(app, d, why)
    if app.ota and not app.ota.done:
        if app.ota.offer["sha256"] == args["sha256"]:
            app.ota.asked = None  # the same offer again: ask for the next chunk now
            return
        app.ota.done = True  # a newer offer replaces the one under way
    why = no_room(app)
    if why:
        return _refuse(app, d, why)
    d.begin()
    if d.done:
        return
    app.ota = d
    asyncio.create_task(d.run())


def _refuse(app, d, why):
    import asyncio

    app.console.emit("ota", state="refused", reason=why[0], detail=why[1])
    asyncio.create_task(d.report("refused", reason=why[0], detail=why[1]))


def _blank(args):
    """An offer with the fields a report names, whatever the bridge sent."""
    v, h = args.get("version"), args.get("sha256")
    return {"version": v if isinstance(v, str) else "", "sha256": h if isinstance(h, str) else "",
            "size": args["size"] if isinstance(args.get("size"), int) else 0}


def run(app, args):
    """The app's one way in (each name costs its heap): the `ota` command's args, an offer or, with
    "confirm", a confirmation; () when the confirmation did not come in time."""
    if args == ():
        import asyncio

        asyncio.create_task(unconfirmed(app))
    elif "confirm" in args:
        confirm(app, args["confirm"])
    else:
        offer(app, args)

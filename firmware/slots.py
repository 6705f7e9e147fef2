# The boot selector (docs/ota.md): which application boots, and what an update that failed leaves.
# main.py runs it first, on every boot. It is part of the base firmware and never changes with an
# update (release bundles leave it out, with main.py and boot.py), so a bad update cannot break it.
#
# Two slots on the filesystem, ota-slot-a and ota-slot-b, each a whole application (.mpy); no slot
# means the base firmware (in ROM or /lib). ota-state.json says which one boots, under these keys:
#   booting_slot       the slot that boots ("a", "b", or None: the base)
#   confirmed_slot     the last slot the bridge confirmed (None: the base), confirmed_version its version
#   security_floor     no offer below this security version is taken
#   pending_slot       installed and not yet confirmed: pending_version, pending_security,
#                      pending_confirm_s (how long it has), pending_boots (it gets one boot) and
#                      pending_failure (what went wrong on that boot: a crash, no confirmation in time)
#   unproven_boots     boots in a row that never proved good (online, or running with the site's
#                      network down); at _SAFE_BOOTS the next boot is in safe mode
#   rolled_back        [version, reason] of an update rolled back, to report once (state())
#   safe_mode_entered  [from, to, boots] (a slot, or None: the base), to report once (state())
# Names are chosen for the heap: MicroPython interns every name and every string of up to 10
# characters of a module it loads, for good, and a panic button's pool of names is nearly full. So
# the keys and paths are longer than that, and the functions reuse names the firmware has already.
# Portable: plain files and json, tested on CPython and MicroPython. What only an update needs
# (install, confirm, the free slot) is in ota.py, loaded when one comes.
import json
import os

from compat import const

_SAFE_BOOTS = const(10)  # boots in a row that never proved good before safe mode (ESPHome's default)


def load(directory="."):
    try:
        with open(directory + "/ota-state.json") as f:
            s = json.load(f)
        if isinstance(s, dict):
            return s
    except (OSError, ValueError):
        pass  # none yet, or unreadable: the base firmware boots, which is always there
    return {}


def write(s, directory="."):
    """Written to a temporary name and renamed: a power cut leaves the old state or the new one."""
    with open(directory + "/ota-state.json.tmp", "w") as f:
        f.write(json.dumps(s))
    os.rename(directory + "/ota-state.json.tmp", directory + "/ota-state.json")


def path(directory, name):
    """Slot `name`'s directory, when its install finished (its marker is written last), else None."""
    d = "%s/ota-slot-%s" % (directory, name)
    try:
        os.stat(d + "/installed.ok")
        return d
    except OSError:
        return None


def boot(directory="."):
    """This boot's slot directory (None: the base firmware); counts the boot. A pending slot gets
    one boot to be confirmed; on the next boot it is rolled back. After _SAFE_BOOTS boots that never
    proved good, the last confirmed slot boots, or the base when that one is the failing one."""
    s = load(directory)
    slot = s.get("booting_slot")
    pend = s.get("pending_slot")
    if pend:
        if s.get("pending_boots", 0) >= 1 or not path(directory, pend):
            s["rolled_back"] = [s.get("pending_version"), s.get("pending_failure") or "not confirmed in time"]
            s["pending_slot"] = s["pending_failure"] = None
            s["pending_boots"] = 0
            slot = s.get("confirmed_slot")
        else:
            s["pending_boots"] = 1
            slot = pend
    elif s.get("unproven_boots", 0) >= _SAFE_BOOTS:
        good = s.get("confirmed_slot")
        to = good if good != slot else None
        s["safe_mode_entered"] = [slot, to, s["unproven_boots"]]  # None: the base firmware
        slot = to
        s["unproven_boots"] = 0
    d = path(directory, slot) if slot else None
    s["booting_slot"] = slot if d else None
    s["unproven_boots"] = s.get("unproven_boots", 0) + 1
    write(s, directory)
    return d


def online(app):
    """The app came online (its birth is out): this boot proved good, and the safe-mode count starts
    again; a pending update proves itself to the bridge with a self-test, at each connect."""
    if not app.update[1]:
        s = load(app.dir)
        if s.get("unproven_boots"):
            s["unproven_boots"] = 0
            write(s, app.dir)
        app.update[1] = True
    if app.update[0] is not None:
        import asyncio

        asyncio.create_task(app.selftest())


def step(app, now):
    """From the app's housekeeping, on an updated device: a minute up with the site's network down
    proves the boot good too (an outage is not the firmware's fault, and must not send a healthy
    device into safe mode); a pending update not confirmed in time goes back (ota.py)."""
    from compat import ticks_diff

    if not app.update[1] and not app.board.isconnected() and app.clock.uptime_ms() > 60000:
        s = load(app.dir)
        s["unproven_boots"] = 0
        write(s, app.dir)
        app.update[1] = True
    if app.update[0] is not None and ticks_diff(now, app.update[0]) >= 0:
        import ota

        ota.run(app, ())  # no confirmation came in time


def state(app):
    """At start-up, on a device that has been updated: what the selector did is raised as an
    `update-failed` fault (an update rolled back; safe mode), once; a pending slot's clock starts. A
    download a reboot or a power cut stopped is not taken up here: the bridge offers it again once
    the device is online, and it goes on from its offset. Nothing of the update loads before then:
    on an ESP32 what loads before Wi-Fi starts is missing to it, and a download that ran it out of
    memory must not do so again at every boot."""
    from compat import ticks_diff, ticks_ms

    s = load(app.dir)
    back, safe = s.get("rolled_back"), s.get("safe_mode_entered")
    if back or safe:
        s["rolled_back"] = s["safe_mode_entered"] = None
        write(s, app.dir)
    pend = s.get("pending_slot")
    if pend and pend == s.get("booting_slot"):  # confirmed by the bridge in time, or rolled back
        app.update[0] = ticks_diff(ticks_ms(), -1000 * s.get("pending_confirm_s", 300))
    if back:
        app.raise_event("fault", "update-failed", {"detail": "%s rolled back: %s" % tuple(back)})
    if safe:
        base = "the base firmware"
        app.raise_event("fault", "update-failed", {"detail": "safe mode: slot %s failed %d boots, started %s" % (
            safe[0] or base, safe[2], safe[1] or base)})


def error(path, e, directory="."):
    """The code of the slot at `path` ended with `e`: noted (a pending slot is rolled back on the
    next boot), then a reset through the base firmware's own board layer, which the slot cannot
    have broken."""
    import sys

    s = load(directory)
    if s.get("pending_slot"):
        s["pending_failure"] = repr(e)[:120]
        write(s, directory)
    sys.path.remove(path)
    for name in list(sys.modules):
        if name.split(".")[0] == "board":
            del sys.modules[name]
    import board

    board.create().reboot()

# Commands: the bridge's signed remote commands (docs/protocol.md section 8) and the console
# commands every device answers (section 9). Test-rig commands are in rig.py.
import asyncio
import gc

from compat import const, ticks_diff, ticks_ms
from protocol import REMOTE_CONFIG, Refused, check_command, dumps, event_id, topic

_IDENTIFY_MS = const(10000)


_app = None  # the app the commands act on


def register(app, console, configured=True):
    """The console commands; a device with a broken config answers only the first three.
    Functions, not a class: on a small heap every class and bound method costs."""
    global _app
    _app = app
    console.register("status", status)
    console.register("heap", heap)
    console.register("reboot", reboot)
    if configured:
        console.register("outbox", outbox)
        console.register("indicator", indicator)
        console.register("selftest", selftest)


# -- remote (signed by the bridge) -------------------------------------------------------

def remote(msg):
    """An authentic command body: run it unless replayed (its ctr must beat the last one)."""
    a = _app
    try:
        name, ctr, args = check_command(msg)
    except Refused as e:
        a.console.emit("rejected", topic="cmd", reason=e.reason)
        return
    if ctr <= a.counters.get("cmd"):
        a.console.emit("rejected", topic="cmd", reason="replayed or unnumbered command")
        return
    a.counters.set("cmd", ctr)
    a.console.emit("cmd", cmd=name)
    if name == "identify":
        a.identify_until = ticks_diff(ticks_ms(), -_IDENTIFY_MS)
        a.show()
    elif name == "silence":
        a.indicator.silence()
    elif name == "self-test":
        asyncio.create_task(a.selftest())
    elif name == "reboot":
        asyncio.create_task(a.reboot())
    elif name == "ota":
        try:
            import ota
        except MemoryError:  # no room even for the update's code: refused without it, said once per offer
            import sys

            sys.modules.pop("ota", None)  # a half-loaded module is not to be found by the next offer
            a.lowmem += 1
            # one long literal: strings of up to 10 characters are interned, and the pool is full
            asyncio.create_task(a.mq.publish(topic(a.dev, "ota"), ('{"v":1,"state":"refused","reason":"low-memory",'
                                             '"detail":"no room to load the update code","version":%s}'
                                             % dumps(args.get("version")).decode()).encode(), qos=1))
            return
        ota.run(a, args)
    elif name == "config":
        for k in REMOTE_CONFIG:
            if isinstance(args.get(k), int) and args[k] >= 0:
                a.cfg[k] = args[k]
        a.cp.cancel_window_ms = a.cfg["cancel_window_s"] * 1000


# -- console -----------------------------------------------------------------------------

def status(args):
    a = _app
    out = {"dev": a.dev, "fw": a.FW_VERSION, "board": a.board.name, "boot": a.clock.boot,
           "up": a.clock.uptime_ms(), "indicator": a.indicator.state,
           "fault": list(a.fault) if a.fault else None,
           "heap_free": gc.mem_free(), "heap_peak": a.heap_peak, "lowmem": a.memory_errors(),
           "errors": a.console.errors}
    if a.dev:
        mq = a.mq
        out.update({"mqtt": "connected" if mq and mq.connected else "connecting",
                    # why it is not connected, and whether it is still trying
                    "mqtt_detail": mq.detail if mq else None, "mqtt_attempts": mq.stats["attempts"] if mq else 0,
                    "net": a.board.isconnected(), "outbox": len(a.delivery),
                    "last_event": a.last_event, "sensors": a.sensor_health(), "test_rig": a.rig})
        if a.panel:
            out["panel"] = a.panel.status()
    return out


def heap(args):
    a = _app
    gc.collect()
    out = {"free": gc.mem_free(), "alloc": gc.mem_alloc(), "peak": a.heap_peak,
           "base": a.heap_base, "data_peak": a.heap_peak - a.heap_base, "lowmem": a.memory_errors()}
    sys_heap = a.board.system_heap()  # where Wi-Fi, lwIP and TLS sessions live, outside the GC heap
    if sys_heap:
        out["sys_free"], out["sys_largest"] = sys_heap
    return out


def outbox(args):
    a = _app
    return {"ids": [event_id(a.dev, n, a.delivery.ep) for n in a.delivery.pending()], "evicted": a.outbox.evicted,
            "lost": a.delivery.lost}


def indicator(args):
    a = _app
    return {"state": a.indicator.state, "stage": a.delivery.stage(a.cp.alarm_id),
            "event": a.cp.alarm_id, "incident": a.cp.incident}


def reboot(args):
    asyncio.create_task(_app.reboot())


def selftest(args):
    asyncio.create_task(_app.selftest())
    return {"started": True}

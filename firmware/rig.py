# Test-rig console commands (docs/protocol.md section 9): drive the button, the network and the
# sensors, hang the main loop, fill the heap, make a step fail. Imported and registered only when the rig is enabled
# (provisioned with `test_rig`, or a board whose inputs exist only through the rig), so a device
# in the field neither answers them nor spends heap on them.
import asyncio
import gc

from compat import const, ticks_add, ticks_diff, ticks_ms
from console import RIG_COMMANDS

_MAX_MS = const(60000)


def _ms(args, default):
    ms = args.get("ms", default)
    if not isinstance(ms, int) or ms < 0 or ms > _MAX_MS:
        raise ValueError("ms must be an integer 0..%d" % _MAX_MS)
    return ms


_app = None  # the app whose board and sensing the commands drive


def register(app, console):
    """Functions, not a class: on a small heap every class and bound method costs."""
    global _app
    _app = app
    g = globals()
    for name in RIG_COMMANDS:
        console.register(name, g[name])


def press(args):
    """Press the button for `ms` (default 100), as a finger would."""
    ms = _ms(args, 100)
    _app.board.rig_button(True)

    async def release():
        await asyncio.sleep_ms(ms)
        _app.board.rig_button(False)

    asyncio.create_task(release())


def button(args):
    _app.board.rig_button(bool(args.get("down")))


def net(args):
    up = bool(args.get("up"))
    _app.board.rig_network(up)
    _app.net_held = not up  # an outage on purpose: the link watch leaves it alone


def hang(args):
    """Spin the main loop's thread: the watchdog is expected to reset the device."""

    async def spin():
        await asyncio.sleep_ms(50)  # let the reply leave first
        while True:
            pass

    asyncio.create_task(spin())
    return {"hanging": True}


def hog(args):
    """Take every free byte of the heap for `ms`, as a leak or a burst would, to show that the
    device rides it out and that a press meanwhile is raised once memory returns."""
    ms = _ms(args, 500)

    async def hold():
        held = []
        end = ticks_add(ticks_ms(), ms)
        while ticks_diff(end, ticks_ms()) > 0:
            for size in (1024, 128, 16):  # and again each pass: what others free is taken too
                try:
                    while True:
                        held.append(bytearray(size))
                except MemoryError:
                    pass
            await asyncio.sleep_ms(5)
        held = None  # noqa: F841  # let go before collecting
        gc.collect()

    asyncio.create_task(hold())
    return {"ms": ms, "up": _app.clock.uptime_ms()}


def sensor(args):
    """Set the simulated sensors' readings (t, rh, p, gas, obs, unplugged, stuck, ...)."""
    sim = _app.board.rig_sensors()
    if sim is None:
        return {"ok": False, "error": "no simulated sensors on this board"}
    fields = {}
    for k in args:
        if k not in ("cmd", "tag"):
            fields[k] = args[k]
    try:
        sim.set(**fields)
    except (ValueError, TypeError) as e:
        return {"ok": False, "error": str(e)}
    return {"ok": True, "sensor": sim.state()}


def nmea(args):
    """One NMEA sentence into the GPS: through the simulated UART where there is one, else
    straight to the driver."""
    line = args.get("line")
    if not isinstance(line, str):
        return {"ok": False, "error": "'line' must be a string"}
    sim = _app.board.rig_sensors()
    sensing = _app.sensing
    if sim is not None and hasattr(sim, "gps_uart"):
        sim.gps_uart().feed(line)  # through the UART, as a receiver would send it
    elif sensing is None or not sensing.feed_nmea(line):
        return {"ok": False, "error": "no GPS on this board"}
    from drivers.gps import parse

    return {"ok": True, "valid": parse(line) is not None}


def panel(args):
    """Set a simulated panel input's line (panel.rig: its arguments)."""
    import panel

    return panel.rig(_app, args)


# What `fail` can break: (object on the app, method), each a step one of the loops runs.
_FAIL_AT = {"button": ("board", "button_pressed"), "network": ("board", "connect_network"),
            "indicator": ("board", "led"), "flash": ("outbox", "read"), "watchdog": ("board", "wdt_feed"),
            "outbox": ("outbox", "put")}


def fail(args):
    """Make the next `n` calls of one step raise OSError, as a pin, flash or Wi-Fi driver error
    would on the chip (WLAN.connect() during a connection attempt: "Wifi Internal Error"), to
    show that every loop survives it and goes on. `outbox`: the next `n` writes to the outbox are
    refused, as a full or failing flash refuses them (the event goes from RAM)."""
    at = args.get("at")
    if at not in _FAIL_AT:
        raise ValueError("at must be one of " + ", ".join(sorted(_FAIL_AT)))
    n = args.get("n", 1)
    if not isinstance(n, int) or n < 1 or n > 10000:
        raise ValueError("n must be an integer 1..10000")
    owner, name = _FAIL_AT[at]
    obj = getattr(_app, owner)
    real = getattr(obj, name)
    left = [n]

    def failing(*a):
        if left[0] > 0:
            left[0] -= 1
            if left[0] == 0:
                setattr(obj, name, real)  # the step is itself again
            if at == "outbox":
                return False  # Outbox.put's answer when the flash refuses the write
            raise OSError("rig: injected failure at " + at)
        return real(*a)

    setattr(obj, name, failing)
    return {"at": at, "n": n}

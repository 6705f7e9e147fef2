# Supervised inputs from a building's conventional fire alarm panel (docs/transmitter.md, "Wiring
# and inputs"). Each input is one ADC pin on an end-of-line (EOL) resistor network:
#
#   supply_v --[r_pull]--+-- ADC pin
#                        +-- line --+--[r_eol]--------------+-- return (GND)
#                                   +--[r_alarm]--/ relay --+
#
# The pin reads supply_v * R / (r_pull + R), R the line's resistance: r_eol (normal), r_eol in
# parallel with r_alarm (active: the panel's relay closed), 0 (short), none (open: supply_v). The
# band edges sit at the arithmetic midpoints between those four nominal voltages. A state counts
# only once it has held for the confirmation time (EN 54-21); open and short are wiring faults,
# never an alarm, and leave a standing alarm as it is (the relay cannot be read through them).
#
# The classifier and the event rules import nothing, so the host checks boards.yaml with the same
# arithmetic (provisioning/boards.py). start() is the glue to the app; it is imported only on a
# board with panel inputs.

STATES = ("short", "active", "normal", "open")  # in rising voltage
_FAULT_STATES = ("open", "short")


def volts(net, ohms):
    """What the pin reads with `ohms` on the line (None: open)."""
    s = net["supply_v"]
    return s if ohms is None else s * ohms / (net["r_pull"] + ohms)


def line_ohms(net, state):
    """The line resistance of each state, as the panel's wiring gives it (None: open)."""
    e, a = net["r_eol"], net["r_alarm"]
    return {"short": 0, "active": e * a / (e + a), "normal": e, "open": None}[state]


def nominal(net):
    """(short, active, normal, open) voltages of a network {supply_v, r_pull, r_eol, r_alarm}."""
    return tuple(volts(net, line_ohms(net, s)) for s in STATES)


def thresholds(net):
    """The three band edges in volts, rising: short | active | normal | open."""
    v = nominal(net)
    return ((v[0] + v[1]) / 2, (v[1] + v[2]) / 2, (v[2] + v[3]) / 2)


def classify(v, edges):
    for i in range(3):
        if v < edges[i]:
            return STATES[i]
    return "open"


class Input:
    """One input: the confirmed state, and the events of it still open (their ids, for the refs)."""

    def __init__(self, name, role, zone, confirm_ms):
        self.name = name
        self.role = role  # "fire": the panel's fire relay; "fault": the panel's own fault relay
        self.zone = zone
        self.confirm_ms = confirm_ms
        self.state = "normal"
        self.volts = None
        self.sig = None  # the open alarm (fire) or panel-fault (fault) event's id
        self.acc = False  # that alarm accepted by 114
        self.line = None  # (cause, event id) of the open wiring fault
        self._seen = None
        self._held = 0

    def sample(self, state, dt_ms):
        """One reading's state, dt_ms after the one before: True when the confirmed state changed.
        The first reading of a state counts as held for no time: when it began is not known."""
        if state != self._seen:
            self._seen = state
            self._held = 0
        else:
            self._held += dt_ms
        if state != self.state and self._held >= self.confirm_ms:
            self.state = state
            return True
        return False


def _ctr(eid):
    return int(eid.rsplit("-", 1)[1])


class Panel:
    def __init__(self, net, inputs, confirm_ms, read, emit, zones=None):
        """inputs: [{"name", "role", "zone"?}]; read(name) -> volts on that input's pin;
        emit(type, cause, data, ref) -> the new event's id; zones: {name: text}, over the board's."""
        self.net = net
        self.edges = thresholds(net)
        zones = zones or {}
        self.inputs = [Input(i["name"], i["role"], zones.get(i["name"], i.get("zone")), confirm_ms)
                       for i in inputs]
        self.read = read
        self.emit = emit
        self.on_save = None  # on_save(text): the open events changed; kept on flash for a reboot
        self.on_output = None  # on_output(on): the acknowledgement output is to change
        self.on_error = None  # on_error(where, exception)
        self.lowmem = 0
        self._out = None

    # -- readings -----------------------------------------------------------------------------
    def step(self, dt_ms):
        """Read every input, confirm, and raise what the confirmed states owe. What emit could not
        raise (a full heap) stays owed and is raised on a later step."""
        for i in self.inputs:
            i.volts = v = self.read(i.name)
            i.sample(classify(v, self.edges), dt_ms)
        changed = False
        for i in self.inputs:
            changed = self._settle(i) or changed
        if changed and self.on_save:
            self.on_save(self.saved())
        self._output()

    def _settle(self, i):
        """Raise or restore until the events open for `i` are what its confirmed state asks for."""
        s, changed = i.state, False
        d = {"input": i.name}
        if i.zone:
            d["zone"] = i.zone
        want = "line-" + s if s in _FAULT_STATES else None
        if i.line and i.line[0] != want:
            cause, ref = i.line
            self.emit("restore", cause, dict(d, detail="%s: line %s cleared" % (i.name, cause[5:])), ref)
            i.line, changed = None, True
        if want and not i.line:
            detail = "%s: line %s (%.2f V)" % (i.name, s, i.volts or 0)
            i.line, changed = (want, self.emit("fault", want, dict(d, detail=detail), None)), True
        fire = i.role == "fire"
        if s == "active" and not i.sig:
            i.sig = self.emit("alarm", "panel", d, None) if fire else \
                self.emit("fault", "panel-fault", dict(d, detail="%s: the panel reports a fault" % i.name), None)
            i.acc, changed = False, True
        elif s == "normal" and i.sig:
            self.emit("restore", "panel" if fire else "panel-fault", d, i.sig)
            i.sig, i.acc, changed = None, False, True
        return changed

    # -- the acknowledgement output -----------------------------------------------------------
    def latest_alarm(self):
        """The input whose open fire alarm was raised last, or None."""
        best = None
        for i in self.inputs:
            if i.role == "fire" and i.sig and (best is None or _ctr(i.sig) > _ctr(best.sig)):
                best = i
        return best

    def stage(self, eid, stage):
        """A delivery stage of one of the device's events: an accepted panel alarm lights the output."""
        if stage != "accepted":
            return
        for i in self.inputs:
            if i.sig == eid and i.role == "fire" and not i.acc:
                i.acc = True
                if self.on_save:
                    self.on_save(self.saved())
        self._output()

    def ack_on(self):
        i = self.latest_alarm()
        return bool(i and i.acc)

    def _output(self):
        on = self.ack_on()
        if on != self._out and self.on_output:
            self.on_output(on)
        self._out = on

    # -- across a reboot ------------------------------------------------------------------------
    def saved(self):
        """The open events, one record per input that has any: 'name sig acc line-cause line-id'."""
        out = []
        for i in self.inputs:
            if i.sig or i.line:
                ln = i.line or (".", ".")
                out.append("%s %s %d %s %s" % (i.name, i.sig or ".", i.acc, ln[0], ln[1]))
        return ";".join(out)

    def restore(self, text):
        """After a reboot: the events still open, and the state they stand for, so a relay still
        closed raises no second alarm and its restore still refers to the first."""
        by = {i.name: i for i in self.inputs}
        for rec in text.split(";"):
            f = rec.split()
            if len(f) != 5 or f[0] not in by:
                continue
            i = by[f[0]]
            if f[1] != ".":
                i.sig, i.acc, i.state = f[1], f[2] == "1", "active"
            if f[3] in ("line-open", "line-short"):
                i.line, i.state = (f[3], f[4]), f[3][5:]

    def status(self):
        return {"inputs": {i.name: i.state for i in self.inputs}, "ack": bool(self._out)}

    async def run(self, poll_ms=100):
        import asyncio

        from compat import ticks_diff, ticks_ms  # type: ignore[import-not-found, unused-ignore]  # on the device

        last = ticks_ms()
        while True:
            now = ticks_ms()
            try:
                self.step(max(0, ticks_diff(now, last)))
            except MemoryError:  # owed events are raised on the next step
                self.lowmem += 1
                import gc

                gc.collect()
            except Exception as e:  # an ADC read error: the next step reads again
                if self.on_error:
                    self.on_error("panel", e)
            last = now
            await asyncio.sleep(poll_ms / 1000)


def start(app):
    """The panel of the app's board, wired to the app: its events, flash and output; None, with a
    fault event, when its inputs cannot be set up (the call point goes on without them)."""
    b, cfg = app.board, app.cfg
    adcs = {}
    try:
        for i in b.panel["inputs"]:
            adcs[i["name"]] = b.panel_adc(i["name"])
    except Exception as e:
        app.fault = ("config", "panel inputs did not start: %r" % e)
        app.raise_event("fault", "config", {"detail": app.fault[1]})
        return None
    p = Panel(b.panel, b.panel["inputs"], cfg["panel_confirm_ms"],
              lambda name: adcs[name].read_uv() / 1000000,
              lambda t, c, d, ref: app.raise_event(t, c, d, ref=ref), cfg.get("panel_zones"))
    p.restore(app.counters.text("panel"))
    p.on_save = lambda text: app.counters.set_text("panel", text)

    def output(on):
        b.ack_output(on)
        app.console.emit("output", name="ack", on=on)

    p.on_output = output
    p.on_error = app.console.error
    return p


def rig(app, args):
    """The test rig's `panel`: put a resistance on a simulated input's line, `ohms` (null: the line
    cut) or the nominal resistance of a `state` in the board's network."""
    b = app.board
    if not b.panel:
        return {"ok": False, "error": "no panel inputs on this board"}
    name = args.get("input")
    if "state" in args:
        if args["state"] not in STATES:
            raise ValueError("state must be one of " + ", ".join(STATES))
        ohms = line_ohms(b.panel, args["state"])
    elif "ohms" in args:
        ohms = args["ohms"]
        if ohms is not None and (not isinstance(ohms, (int, float)) or isinstance(ohms, bool) or ohms < 0):
            raise ValueError("ohms must be a number >= 0, or null for a cut line")
    else:
        raise ValueError("give 'ohms' or 'state'")
    if not b.rig_panel(name, ohms):
        return {"ok": False, "error": "this board's panel inputs are real"}
    return {"input": name, "ohms": ohms}

# LED and buzzer patterns for each indicator state (docs/protocol.md section 10).
# A pattern is a list of (led, buzzer, ms) steps played in a loop; `once` patterns stop at the end.
from compat import const, ticks_diff

# All the patterns in one string, so they stay in flash with the bytecode (a table of tuples, or a
# dict of strings, would be built in RAM at import): "|<state> <steps>" for each state; each step is
# "L" (LED on) and/or "B" (buzzer on) followed by its duration in ms; a final step of 0 ms is steady.
_PATTERNS = const("|idle L60 4940|alarm LB100 B100|sent LB150 B150|stored LB80 L420 500|"
                  "accepted LB150 L150 LB150 L150 LB150 L0|failed LB120 B120 LB120 640|cancelled B200 0|"
                  "fault L50 1950|identify L250 250")


def steps(state):
    """A state's pattern as (led, buzzer, ms) steps: alarm, "LB100 B100" -> [(1, 1, 100), (0, 1, 100)].
    An unknown state shows as a fault."""
    i = _PATTERNS.find("|%s " % state)
    if i < 0:
        i = _PATTERNS.find("|fault ")
    j = _PATTERNS.find("|", i + 1)
    out = []
    for step in _PATTERNS[i + 1:j if j > 0 else len(_PATTERNS)].split()[1:]:
        ms = step.lstrip("LB")
        head = step[:len(step) - len(ms)]
        out.append((int("L" in head), int("B" in head), int(ms)))
    return out


class Indicator:
    def __init__(self, led, buzzer):
        self.led = led  # callables taking a bool
        self.buzzer = buzzer
        self.state = None
        self.silenced = False
        self._steps = ()
        self._i = 0
        self._at = 0

    def show(self, state, now):
        if state == self.state:
            return False
        new = steps(state)  # first: a full heap leaves the old state
        self.state = state
        self._steps = new
        self._i = 0
        self._at = now
        self._apply()
        return True

    def silence(self):
        self.silenced = True
        self.buzzer(False)

    def _apply(self):
        led, buz, _ = self._steps[self._i]
        self.led(bool(led))
        self.buzzer(bool(buz) and not self.silenced)

    def tick(self, now):
        if not self._steps:
            return
        step_ms = self._steps[self._i][2]
        if step_ms == 0:  # a final, steady step
            return
        if ticks_diff(now, self._at) >= step_ms:
            self._at = now
            self._i += 1
            if self._i >= len(self._steps):
                self._i = len(self._steps) - 1 if self.state in ("accepted", "cancelled") else 0  # played once
            self._apply()

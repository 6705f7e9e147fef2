# LED and buzzer patterns for each indicator state (docs/protocol.md section 10).
# A pattern is a list of (led, buzzer, ms) steps played in a loop; `once` patterns stop at the end.
from compat import ticks_diff

PATTERNS = {
    "idle": ((1, 0, 60), (0, 0, 4940)),
    "alarm": ((1, 1, 100), (0, 1, 100)),
    "sent": ((1, 1, 150), (0, 1, 150)),
    "stored": ((1, 1, 80), (1, 0, 420), (0, 0, 500)),
    "accepted": ((1, 1, 150), (1, 0, 150), (1, 1, 150), (1, 0, 150), (1, 1, 150), (1, 0, 0)),
    "failed": ((1, 1, 120), (0, 1, 120), (1, 1, 120), (0, 0, 640)),
    "cancelled": ((0, 1, 200), (0, 0, 0)),
    "fault": ((1, 0, 50), (0, 0, 1950)),
    "identify": ((1, 0, 250), (0, 0, 250)),
}
ONCE = ("accepted", "cancelled")


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
        self.state = state
        self._steps = PATTERNS.get(state, PATTERNS["fault"])
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
                self._i = len(self._steps) - 1 if self.state in ONCE else 0
            self._apply()

# Button debounce: a level must hold for `ms` before it counts as an edge.
from compat import ticks_diff


class Debouncer:
    def __init__(self, ms=30):
        self.ms = ms
        self.state = False
        self._raw = self.state
        self._since = None
        self.changed_at = None

    def sample(self, pressed, now):
        """Feed one raw sample (True = pressed). Returns "down", "up" or None."""
        if pressed != self._raw:
            self._raw = pressed
            self._since = now
            return None
        if pressed != self.state and self._since is not None and ticks_diff(now, self._since) >= self.ms:
            self.state = pressed
            self.changed_at = now
            return "down" if pressed else "up"
        return None

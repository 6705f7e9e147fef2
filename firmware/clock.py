# Device time: uptime always; wall-clock Unix seconds only when synchronised (NTP, or a host clock).
import time

from compat import ticks_diff, ticks_ms

# MicroPython ports whose epoch is 2000-01-01 (the ESP32) need this added to reach Unix time.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


class Clock:
    def __init__(self, boot=0, synced=False):
        self.boot = boot
        self.synced = synced
        self._last = ticks_ms()
        self._up = 0

    def uptime_ms(self):
        """Milliseconds since start. ticks_ms() wraps (every 2**30 ms, 12.4 days, on the ESP32) and
        ticks_diff() is only right within half of that, so the uptime is summed from steps; the main
        loop calls this twice a second, far more often than the 6.2 days a step may last."""
        now = ticks_ms()
        self._up += ticks_diff(now, self._last)
        self._last = now
        return self._up

    def unix(self):
        """Unix seconds (UTC) or None when the clock has not been set."""
        if not self.synced:
            return None
        return int(time.time()) + _EPOCH_OFFSET

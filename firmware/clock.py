# Device time: uptime always; wall-clock Unix seconds only when synchronised (NTP, or a host clock).
import time

from compat import ticks_diff, ticks_ms

# MicroPython ports whose epoch is 2000-01-01 (the ESP32) need this added to reach Unix time.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


class Clock:
    def __init__(self, boot=0, synced=False):
        self.boot = boot
        self.synced = synced
        self._t0 = ticks_ms()

    def uptime_ms(self):
        return ticks_diff(ticks_ms(), self._t0)

    def unix(self):
        """Unix seconds (UTC) or None when the clock has not been set."""
        if not self.synced:
            return None
        return int(time.time()) + _EPOCH_OFFSET

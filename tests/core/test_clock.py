# Uptime past the tick counter's wrap: on the ESP32 ticks_ms() wraps every 2**30 ms (12.4 days) and
# ticks_diff() is right only within 2**29 ms, so an uptime taken as one difference turns negative
# after 6.2 days (and the bridge refuses an event with a negative `up`).
import clock

PERIOD = 1 << 30  # MicroPython's ticks period on the ESP32 (and every port)


class Ticks:
    def __init__(self, start):
        self.t = start

    def ms(self):
        return self.t % PERIOD

    @staticmethod
    def diff(a, b):
        return ((a - b + PERIOD // 2) % PERIOD) - PERIOD // 2


def test_uptime_counts_on_past_the_wrap_of_the_tick_counter():
    t = Ticks(PERIOD - 5000)  # started just before a wrap
    real_ms, real_diff = clock.ticks_ms, clock.ticks_diff
    clock.ticks_ms, clock.ticks_diff = t.ms, t.diff
    try:
        c = clock.Clock()
        hour = 3600 * 1000
        for _ in range(24 * 30):  # thirty days, looked at every hour
            t.t += hour
            up = c.uptime_ms()
        assert up == 24 * 30 * hour, up
        assert up > PERIOD  # well past one wrap and more
    finally:
        clock.ticks_ms, clock.ticks_diff = real_ms, real_diff

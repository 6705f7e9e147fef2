# Heat detector, EN 54-5 class A1R target (static response 54..65 degC, rate-of-rise class R).
#
# The readings are smoothed (first-order, `smooth_s`) to take out sensor noise. Then:
#   static:        smoothed >= alarm_c (58)                              -> alarm
#   rate-of-rise:  rise over the last `ror_window_s` (60 s) >= ror_k (7.5 K)
#                  AND smoothed >= baseline + ror_rise_k (9 K)           -> alarm
#                  (the rate alone                                      -> prealarm)
#   jump:          rise >= jump_k (20 K) within `jump_s` (10 s)          -> alarm at once
#   static prealarm: smoothed >= prealarm_c (52, above the 50 degC maximum application temperature)
# The rise-above-baseline term keeps a fast ramp from alarming before EN 54-5's lower limits (a
# 10 K/min ramp must not alarm within 60 s); the baseline follows the ambient slowly (`base_s`),
# so a heating system or the sun warming the room moves it along instead of looking like a fire.
# A reading that is missing, NaN or outside -40..125 degC (the BME680's range) is a fault.
# See docs/detection.md for the simulator evidence.
import math

DEFAULTS = {
    "alarm_c": 58.0,
    "prealarm_c": 52.0,
    "ror_k": 7.5,
    "ror_window_s": 60,
    "ror_rise_k": 9.0,
    "jump_k": 20.0,
    "jump_s": 10,
    "smooth_s": 6.0,
    "base_s": 600.0,
    "clear_k": 3.0,
}
_EPS = 1e-6  # K: far below any sensor's resolution
HIST_STEP_S = 4  # spacing of the rate-of-rise history: 16 entries cover the 60 s window
MIN_C = -40.0
MAX_C = 125.0


def _bad(v):
    return v is None or not isinstance(v, (int, float)) or v != v or v < MIN_C or v > MAX_C


class HeatDetector:
    def __init__(self, **settings):
        s = dict(DEFAULTS)
        for k in settings:
            if k not in DEFAULTS:
                raise ValueError("heat: unknown setting '%s'" % k)
        s.update(settings)
        if not 54 <= s["alarm_c"] <= 65:
            raise ValueError("heat: alarm_c must be within 54..65 degC (EN 54-5 class A1)")
        if not 50 <= s["prealarm_c"] <= s["alarm_c"]:
            raise ValueError("heat: prealarm_c must be within 50..alarm_c")
        self.s = s
        self.state = "normal"
        self.cause = None  # "static", "ror" or "jump" once alarmed
        self.value = None  # smoothed temperature
        self.base = None
        self._t = None
        self._hist = []  # [(t_s, smoothed)] at least 2 s apart, covering ror_window_s
        self._raw = []  # [(t_s, raw)] covering jump_s

    def _rise_over(self, hist, window, t_s, now_val):
        # rise since the newest sample that is at least `window` old; None without enough history
        old = None
        for ts, v in hist:
            if t_s - ts >= window:
                old = v
            else:
                break
        return None if old is None else now_val - old

    def update(self, t_s, temp_c):
        """Feed one reading taken at t_s seconds; returns 'normal', 'prealarm', 'alarm' or 'fault'."""
        if _bad(temp_c):
            self.state = "fault"
            return self.state
        s = self.s
        temp_c = float(temp_c)
        if self.value is None or self._t is None or t_s <= self._t:
            if self.value is None:
                self.value = self.base = temp_c
            dt = 0
        else:
            dt = t_s - self._t
            self.value += (temp_c - self.value) * (1 - math.exp(-dt / s["smooth_s"]))
            self.base += (self.value - self.base) * (1 - math.exp(-dt / s["base_s"]))
            if self.value < self.base:
                self.base = self.value  # cooling: the baseline follows down at once
        self._t = t_s
        v = self.value

        w = s["ror_window_s"]
        h = self._hist
        if not h or t_s - h[-1][0] >= HIST_STEP_S:
            h.append((t_s, v))
        while len(h) > 2 and t_s - h[1][0] >= w:
            h.pop(0)
        r = self._raw
        r.append((t_s, temp_c))
        while len(r) > 2 and t_s - r[1][0] >= s["jump_s"]:
            r.pop(0)

        rise = self._rise_over(h, w, t_s, v)
        ror = rise is not None and rise >= s["ror_k"]
        # _EPS: a rise of exactly jump_k must not miss by a float rounding (20.000000000000004 + 20 - ...)
        jump = t_s - r[0][0] <= s["jump_s"] and temp_c - min(x[1] for x in r) >= s["jump_k"] - _EPS

        if v >= s["alarm_c"]:
            new, cause = "alarm", "static"
        elif jump:
            new, cause = "alarm", "jump"
        elif ror and v - self.base >= s["ror_rise_k"]:
            new, cause = "alarm", "ror"
        elif ror or v >= s["prealarm_c"]:
            new, cause = "prealarm", None
        else:
            new, cause = "normal", None

        if self.state == "alarm" and new != "alarm":
            # stay in alarm until clearly cooler, so a reading near the threshold does not flap
            if v >= s["alarm_c"] - s["clear_k"] or ror:
                new = "alarm"
        if new == "alarm" and self.state != "alarm":
            self.cause = cause
        elif new != "alarm":
            self.cause = None
        self.state = new
        return new

# Where the device is, for the `loc` of every event (docs/protocol.md section 4): a fresh and accurate
# GPS fix wins, otherwise the fixed coordinates from the device config. Never waits for GPS: an alarm
# always gets a location at once.

from compat import ticks_diff


class LocationPolicy:
    def __init__(self, fixed, max_age_s=30, max_acc_m=50):
        self.fixed = {"lat": round(fixed["lat"], 6), "lon": round(fixed["lon"], 6),
                      "acc": int(fixed.get("acc", 15)), "src": "fixed", "age": 0}
        self.max_age_ms = max_age_s * 1000
        self.max_acc_m = max_acc_m
        self.fix = None  # (lat, lon, acc_m, at_ms)
        self._good = None  # last state reported: True good, False lost, None never good

    def gps_fix(self, lat, lon, acc_m, at_ms):
        self.fix = (lat, lon, acc_m, at_ms)

    def _usable(self, now_ms):
        f = self.fix
        if f is None or f[2] > self.max_acc_m:
            return False
        age = ticks_diff(now_ms, f[3])
        return 0 <= age <= self.max_age_ms

    def current(self, now_ms):
        f = self.fix
        if f is None or not self._usable(now_ms):
            return dict(self.fixed)
        lat, lon, acc, at = f
        return {"lat": round(lat, 6), "lon": round(lon, 6), "acc": int(acc), "src": "gps",
                "age": ticks_diff(now_ms, at) // 1000}

    def check(self, now_ms):
        """'lost' when a good fix goes stale or inaccurate, 'recovered' when it comes back, else None."""
        good = self._usable(now_ms)
        if good and self._good is False:
            self._good = True
            return "recovered"
        if not good and self._good:
            self._good = False
            return "lost"
        if good:
            self._good = True
        return None

# Smoke detector over the optical chamber's obscuration (dB/m), EN 54-7 band 1 target.
#
# - threshold: 0.05..0.3 dB/m (EN 54-7 / TCVN 7568-7 response threshold band; refused outside);
#   prealarm at `prealarm_frac` of it; alarm once the compensated value stays at or above the
#   threshold for `persist_s`.
# - drift compensation: a baseline follows slow changes of the clean-air reading (dust, ageing),
#   slew-limited to `drift_per_h` dB/m per hour and only while the reading is below the prealarm
#   level, so smoke is never learnt away. A baseline beyond +-`drift_max` is a dirty or broken
#   chamber: "fault", never an alarm.
# - steam: a humidity jump of `steam_rh` %RH above its slow baseline with no heat (temperature within
#   `steam_dt` K of its baseline) and no gas change (gas resistance at least `steam_gas` of its
#   baseline) holds the detector at prealarm.
import math

DEFAULTS = {
    "threshold": 0.15,
    "prealarm_frac": 0.5,
    "persist_s": 10,
    "drift_per_h": 0.01,
    "drift_max": 0.2,
    "steam_rh": 10.0,
    "steam_dt": 2.0,
    "steam_gas": 0.8,
    "base_s": 900.0,
}
MIN_THRESHOLD = 0.05
MAX_THRESHOLD = 0.3


class SmokeDetector:
    def __init__(self, **settings):
        s = dict(DEFAULTS)
        for k in settings:
            if k not in DEFAULTS:
                raise ValueError("smoke: unknown setting '%s'" % k)
        s.update(settings)
        th = s["threshold"]
        if not isinstance(th, (int, float)) or not MIN_THRESHOLD <= th <= MAX_THRESHOLD:
            raise ValueError("smoke: threshold must be within 0.05..0.3 dB/m (EN 54-7)")
        if not 0 < s["prealarm_frac"] < 1:
            raise ValueError("smoke: prealarm_frac must be within 0..1")
        self.s = s
        self.state = "normal"
        self.baseline = 0.0
        self.comp = None  # compensated obscuration, dB/m
        self.steam = False
        self.detail = None  # fault text
        self._t = None
        self._above_since = None
        self._rh = self._temp = self._gas = None  # slow baselines of the supporting readings

    def _follow(self, base, v, k):
        if v is None:
            return base
        return v if base is None else base + (v - base) * k

    def update(self, t_s, obs, t=None, rh=None, gas=None):
        """Feed one reading; returns 'normal', 'prealarm', 'alarm' or 'fault'."""
        s = self.s
        if obs is None or obs != obs:
            self.detail = "no chamber reading"
            self.state = "fault"
            return self.state
        dt = 0 if self._t is None or t_s <= self._t else t_s - self._t
        self._t = t_s
        pre = s["threshold"] * s["prealarm_frac"]

        comp = obs - self.baseline
        if comp < pre:
            step = s["drift_per_h"] * dt / 3600
            self.baseline += max(-step, min(step, comp))
        self.comp = comp = obs - self.baseline

        # steam: judged against the baselines from before this reading
        self.steam = (rh is not None and self._rh is not None and rh - self._rh >= s["steam_rh"]
                      and (t is None or self._temp is None or t - self._temp < s["steam_dt"])
                      and (gas is None or not self._gas or gas >= self._gas * s["steam_gas"]))
        k = 1 - math.exp(-dt / s["base_s"]) if dt else 0
        if comp < pre:  # baselines learn only in clean air
            self._rh = self._follow(self._rh, rh, k)
            self._temp = self._follow(self._temp, t, k)
            self._gas = self._follow(self._gas, gas, k)
        else:
            self._rh = rh if self._rh is None else self._rh
            self._temp = t if self._temp is None else self._temp
            self._gas = gas if self._gas is None else self._gas

        if abs(self.baseline) > s["drift_max"] or obs < -s["drift_max"]:
            if obs < -s["drift_max"]:
                self.detail = "chamber reads below clean air (%.3f dB/m): LED or input broken" % obs
            else:
                self.detail = "chamber beyond drift range (baseline %.3f dB/m): dirty chamber" % self.baseline
            self._above_since = None
            self.state = "fault"
            return self.state
        self.detail = None

        if comp >= s["threshold"]:
            if self._above_since is None:
                self._above_since = t_s
            held = t_s - self._above_since >= s["persist_s"]
            new = "alarm" if held and not self.steam else "prealarm"
        else:
            self._above_since = None
            new = "prealarm" if comp >= pre else "normal"
        if self.state == "alarm" and new == "prealarm":
            new = "alarm"  # latched until the chamber clears below the prealarm level
        self.state = new
        return new

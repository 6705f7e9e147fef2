# Multi-criteria combination of the heat and smoke detectors into events.
#
# prealarm: one criterion (either detector at prealarm);
# alarm:    a detector confirms on its own (its persistence / rate / static rule), cause heat or smoke,
#           or both detectors are at prealarm or above at once, cause multi;
# restore:  every criterion back to normal after a prealarm or alarm.
# The level only escalates while any criterion holds, so one fire gives one prealarm and one alarm.
# Detector faults (an impossible temperature, a chamber beyond its drift range) come out as
# fault/restore events with cause sensor / chamber.
from detect.heat import HeatDetector
from detect.smoke import SmokeDetector

LEVELS = {"normal": 0, "prealarm": 1, "alarm": 2}
HIST_EVERY_S = 6
HIST_S = 60


def _r(v, nd):
    return None if v is None else round(v, nd)


class MultiCriteria:
    def __init__(self, heat=None, smoke=None, use_heat=True, use_smoke=True):
        self.heat = HeatDetector(**(heat or {})) if use_heat else None
        self.smoke = SmokeDetector(**(smoke or {})) if use_smoke else None
        self.level = "normal"
        self.cause = None
        self.faults = {}  # cause -> detail
        self.hist = []  # [t_s, t_x10, obs_x1000, rh]
        self.last = {}

    def _history(self, t_s, r):
        h = self.hist
        if not h or t_s - h[-1][0] >= HIST_EVERY_S:
            t, obs, rh = r.get("t"), r.get("obs"), r.get("rh")
            h.append([t_s, None if t is None else int(round(t * 10)),
                      None if obs is None else int(round(obs * 1000)), None if rh is None else int(round(rh))])
        while h and t_s - h[0][0] > HIST_S:
            h.pop(0)

    def evidence(self, t_s):
        """Readings + the last minute in compact form: hist = [[age_s, t_x10, obs_x1000, rh], ...]."""
        r = self.last
        d = {"t": _r(r.get("t"), 2), "rh": _r(r.get("rh"), 1), "p": r.get("p"), "gas": r.get("gas"),
             "obs": _r(r.get("obs"), 3)}
        d["hist"] = [[int(t_s - x[0]), x[1], x[2], x[3]] for x in self.hist]
        if self.smoke is not None and self.smoke.steam:
            d["steam"] = 1
        return d

    def _fault(self, events, cause, detail):
        if detail is not None and cause not in self.faults:
            self.faults[cause] = detail
            events.append(("fault", cause, {"detail": detail}))
        elif detail is None and cause in self.faults:
            del self.faults[cause]
            events.append(("restore", cause, {"detail": "%s: cleared" % cause}))

    def update(self, t_s, r):
        """r: readings dict (t, rh, p, gas, obs; None when unavailable) -> list of (type, cause, data)."""
        events = []
        self.last = r
        self._history(t_s, r)
        hs = ss = "normal"
        if self.heat is not None and r.get("t") is not None:
            hs = self.heat.update(t_s, r["t"])
            self._fault(events, "sensor", "temperature reading impossible: %s" % r["t"] if hs == "fault" else None)
        if self.smoke is not None and r.get("obs") is not None:
            ss = self.smoke.update(t_s, r["obs"], r.get("t"), r.get("rh"), r.get("gas"))
            self._fault(events, "chamber", self.smoke.detail if ss == "fault" else None)
        h, s = LEVELS.get(hs, 0), LEVELS.get(ss, 0)

        if h >= 1 and s >= 1:  # two criteria agree
            new, cause = "alarm", "multi"
        elif h == 2:
            new, cause = "alarm", "heat"
        elif s == 2:
            new, cause = "alarm", "smoke"
        elif h == 1:
            new, cause = "prealarm", "heat"
        elif s == 1:
            new, cause = "prealarm", "smoke"
        else:
            new, cause = "normal", None

        if new == "normal":
            if self.level != "normal":
                events.append(("restore", self.cause, self.evidence(t_s)))
                self.level, self.cause = "normal", None
        elif LEVELS[new] > LEVELS[self.level]:
            self.level, self.cause = new, cause
            events.append((new, cause, self.evidence(t_s)))
        return events

# The sensing task: polls the sensors every `sample_s`, feeds the detectors and the fault monitors,
# and raises events through emit(type, cause, data) on every transition. The app runs `run()` and
# reads `readings()` / `location()` / `battery()` for telemetry.
#
# A sensor is used when it is listed in board.sensors ("bme680", "smoke", "gps") and the board
# hands out its bus; the battery and tamper inputs whenever the board has them.
# Device config keys used (all optional): sample_s (2), detect {"heat": {...}, "smoke": {...}}
# (detector settings, docs/detection.md), smoke_cal {"clean", "per_db"}, battery {"divider",
# "low_v", "empty_v", "full_v"} (over the board's pins.battery_adc), tamper {"active": 0|1},
# stuck_s (1800), gps_silent_s (10), i2c_retries (3), bme680_addr (0x77), loc, gps_max_age_s,
# gps_max_acc_m.
import asyncio
import gc

from compat import ticks_diff
from detect.location import LocationPolicy
from detect.multi_criteria import MultiCriteria

GPS_POLL_MS = 250  # a 9600 baud receiver fills a 256-byte UART buffer in about 0.3 s


class Incidents:
    """Links a sensor's events into incidents (the `ref` of section 4): the alarm that confirms a
    prealarm and the restore that ends it refer to the incident's first event; the restore of a
    fault refers to that fault."""

    def __init__(self):
        self.first = None  # first event of the open sensor incident
        self._faults = {}  # fault cause -> the fault event's id

    def ref_for(self, type, cause):
        if type in ("prealarm", "alarm"):
            return self.first
        if type == "restore":
            return self._faults.pop(cause) if cause in self._faults else self.first
        return None

    def raised(self, type, cause, eid, ref):
        if type in ("prealarm", "alarm") and self.first is None:
            self.first = eid
        elif type == "fault":
            self._faults[cause] = eid
        elif type == "restore" and ref == self.first:
            self.first = None


GPS_LISTEN_MS = 3000  # the self-test's wait for a receiver not heard lately

# which of Sensing.faults belong to which fitted sensor (boards.yaml's names)
_FAULT_KEYS = {"bme680": ("bme680", "stuck"), "smoke": ("adc", "smoke_cal"), "gps": ("gps",)}


class Sensing:
    def __init__(self, board, cfg, emit, clock_ms):
        self.board = board
        self.cfg = cfg
        self.emit = emit
        self.clock_ms = clock_ms
        self.sample_ms = int(cfg.get("sample_s", 2) * 1000)
        self.stuck_ms = int(cfg.get("stuck_s", 1800) * 1000)
        self.gps_silent_ms = int(cfg.get("gps_silent_s", 10) * 1000)
        self.retries = cfg.get("i2c_retries", 3)
        self.faults = {}  # key -> (cause, detail)
        self._t0 = self._last = clock_ms()
        self.elapsed_ms = 0  # monotonic across ticks wrap-around
        self.lowmem = 0  # samples lost to a full heap (MemoryError)
        self.on_error = None  # on_error(where, exception): any other exception a sample died of
        self.values = {"t": None, "rh": None, "p": None, "gas": None, "obs": None}

        fitted = getattr(board, "sensors", None) or ()
        self.i2c = board.i2c() if "bme680" in fitted else None
        if self.i2c is not None:  # drivers are imported only when fitted: their bytecode costs heap
            from drivers import bme680

            self._bme680 = bme680
        self.bme = None
        self.bme_errors = 0
        self._stuck_key = None
        self._stuck_since = 0
        adc = board.smoke_adc() if "smoke" in fitted else None
        self.chamber = None
        if adc is not None:
            from drivers.smoke_chamber import SmokeChamber

            try:
                self.chamber = SmokeChamber(adc, cfg.get("smoke_cal"))
            except ValueError as e:
                self._fault("config", "smoke_cal", str(e))
        uart = board.gps_uart() if "gps" in fitted else None
        self.gps = None
        if uart is not None:
            from drivers.gps import GPS

            self.gps = GPS(uart)
        self._gps_lost = False
        self.batt_adc = board.battery_adc()
        self.batt = {"divider": 2.0, "low_v": 3.4, "empty_v": 3.3, "full_v": 4.2}
        self.batt.update((getattr(board, "pins", None) or {}).get("battery_adc") or {})
        self.batt.update(cfg.get("battery") or {})
        self.batt_v = None
        self.tamper = board.tamper_pin()
        loc = cfg.get("loc") or {"lat": 0.0, "lon": 0.0, "acc": 100000}
        self.loc = LocationPolicy(loc, cfg.get("gps_max_age_s", 30), cfg.get("gps_max_acc_m", 50))
        det = cfg.get("detect") or {}
        try:
            self.multi = MultiCriteria(det.get("heat"), det.get("smoke"), self.i2c is not None,
                                       self.chamber is not None)
        except ValueError as e:
            self._fault("config", "detect", str(e))
            self.multi = MultiCriteria(None, None, self.i2c is not None, self.chamber is not None)

    # --- faults -------------------------------------------------------------------------------
    def _fault(self, cause, key, detail):
        """Raise (detail given) or clear (detail None) one fault; events only on transitions."""
        if detail is not None:
            if key not in self.faults:
                self.faults[key] = (cause, detail)
                self.emit("fault", cause, {"detail": detail})
        elif key in self.faults:
            cause, was = self.faults.pop(key)
            self.emit("restore", cause, {"detail": "%s: cleared" % key})

    def _tick(self):
        now = self.clock_ms()
        self.elapsed_ms += max(0, ticks_diff(now, self._last))
        self._last = now
        return now

    # --- BME680 -------------------------------------------------------------------------------
    def _bme_error(self, cause, detail):
        self.bme = None
        self.bme_errors += 1
        if self.bme_errors >= self.retries:
            for v in ("t", "rh", "p", "gas"):
                self.values[v] = None
            self._fault(cause, "bme680", "bme680: " + detail)

    def _bme_ok(self):
        self.bme_errors = 0
        self._fault("sensor", "bme680", None)

    async def _read_bme(self):
        if self.i2c is None:
            return None
        try:
            if self.bme is None:
                self.bme = self._bme680.BME680(self.i2c, self.cfg.get("bme680_addr", 0x77))
            self.bme.start()
            waited = 0
            r = self.bme.result()
            while r is None and waited < 2000:
                await asyncio.sleep(0.02)
                waited += 20
                r = self.bme.result()
        except self._bme680.ChipIdError as e:
            self._bme_error("sensor", str(e))
            return None
        except OSError as e:
            self._bme_error("i2c", "no answer on I2C (%s)" % e)
            return None
        if r is None:
            self._bme_error("sensor", "measurement timed out")
            return None
        self._bme_ok()
        return r

    def _check_stuck(self, r):
        key = (r["t"], r["p"], r["rh"])
        if key != self._stuck_key:
            self._stuck_key = key
            self._stuck_since = self.elapsed_ms
            self._fault("sensor", "stuck", None)
        elif self.elapsed_ms - self._stuck_since >= self.stuck_ms:
            self._fault("sensor", "stuck", "bme680 readings unchanged for %d s" % (self.stuck_ms // 1000))

    # --- the other inputs ---------------------------------------------------------------------
    def _poll_gps(self, now):
        g = self.gps
        if g is None:
            return
        g.poll(now)
        if g.fix is not None:
            self.loc.gps_fix(g.fix[0], g.fix[1], g.fix[2], g.fix[3])
        else:
            self.loc.fix = None

    def _check_gps(self, now):
        if self.gps is None:
            return
        heard = self.gps.heard_ms
        since = ticks_diff(now, heard) if heard is not None else self.elapsed_ms
        change = self.loc.check(now)
        if change == "lost":
            self._gps_lost = True
        elif change == "recovered":
            self._gps_lost = False
        if since >= self.gps_silent_ms:
            detail = "gps receiver silent"
        elif self._gps_lost:
            detail = "gps fix lost"
        else:
            detail = None
        key = "gps"
        if detail is not None and key in self.faults and self.faults[key][1] != detail:
            self.faults[key] = ("gps", detail)  # already reported as a gps fault
        self._fault("gps", key, detail)

    def _check_battery(self):
        b, adc = self.batt, self.batt_adc
        if adc is None:
            return
        if hasattr(adc, "read_uv"):  # ESP32: calibrated by the chip's eFuse reference
            pin_v = adc.read_uv() / 1000000
        else:
            pin_v = adc.read_u16() / 65535 * b.get("vref", 3.3)
        self.batt_v = pin_v * b["divider"]
        low = b["low_v"]
        if self.batt_v < low:
            self._fault("battery", "battery", "battery low: %.2f V" % self.batt_v)
        elif self.batt_v >= low + 0.1:  # hysteresis: a sagging cell does not flap
            self._fault("battery", "battery", None)

    def _check_tamper(self):
        if self.tamper is None:
            return
        active = (self.cfg.get("tamper") or {}).get("active", 1)
        self._fault("tamper", "tamper", "enclosure open" if self.tamper.value() == active else None)

    def health(self, fitted):
        """{fitted sensor: "ok" or its fault}: what `status` tells the installer's verify."""
        out = {}
        for name in fitted:
            keys = _FAULT_KEYS.get(name, (name,))
            bad = [self.faults[k][1] for k in keys if k in self.faults]
            out[name] = bad[0] if bad else "ok"
        return out

    # --- the task -----------------------------------------------------------------------------
    async def step(self):
        """One sample: read everything, feed detectors and monitors, emit on transitions."""
        now = self._tick()
        self._poll_gps(now)
        r = await self._read_bme()
        now = self._tick()
        if r is not None:
            self.values["t"], self.values["rh"], self.values["p"] = r["t"], r["rh"], r["p"]
            self.values["gas"] = r["gas"]
            self._check_stuck(r)
        if self.chamber is not None:
            try:
                self.values["obs"] = self.chamber.read()
            except OSError as e:
                self.values["obs"] = None
                self._fault("chamber", "adc", "smoke ADC read failed (%s)" % e)
        for typ, cause, data in self.multi.update(self.elapsed_ms / 1000, self.values):
            self.emit(typ, cause, data)
        self._check_gps(now)
        self._check_battery()
        self._check_tamper()

    async def run(self):
        while True:
            try:
                start = self.elapsed_ms
                await self.step()
                while True:
                    now = self._tick()
                    self._poll_gps(now)
                    left = self.sample_ms - (self.elapsed_ms - start)
                    if left <= 0:
                        break
                    await asyncio.sleep(min(left, GPS_POLL_MS) / 1000)
            except MemoryError:
                # A full heap costs this sample, not the detector: the next one comes as usual.
                self.lowmem += 1
                gc.collect()
                await asyncio.sleep(1)
            except Exception as e:  # a driver or bus error: this sample is lost, the detector goes on
                if self.on_error:
                    self.on_error("sensing", e)
                await asyncio.sleep(1)

    # --- what the app reads -------------------------------------------------------------------
    def readings(self):
        out = dict(self.values)
        out["gps"] = None
        f = self.loc.current(self.clock_ms())
        if f["src"] == "gps":
            out["gps"] = {"lat": f["lat"], "lon": f["lon"], "acc": f["acc"], "age": f["age"]}
        return out

    def location(self, now_ms):
        return self.loc.current(now_ms)

    def battery(self):
        """{"v": cell volts, "pct": linear between empty_v and full_v} for telemetry, or None."""
        if self.batt_v is None:
            return None
        empty, full = self.batt["empty_v"], self.batt["full_v"]
        pct = int(max(0, min(100, (self.batt_v - empty) / (full - empty) * 100)))
        return {"v": round(self.batt_v, 2), "pct": pct}

    async def selftest(self):
        """Heater check (a gas measurement with a stable heater), chamber check (reading within its
        drift range), GPS heard. Returns {"ok": bool, "heater": ..., "chamber": ..., "gps": ...}."""
        res = {"heater": "absent", "chamber": "absent", "gps": "absent"}
        if self.i2c is not None:
            r = await self._read_bme()
            res["heater"] = "ok" if r is not None and r["heat_stab"] and r["gas"] else "fail"
            if r is not None:
                res["gas"] = r["gas"]
        if self.chamber is not None:
            try:
                obs = self.chamber.read()
                lim = self.multi.smoke.s["drift_max"] if self.multi.smoke else 0.2
                res["chamber"] = "ok" if -lim <= obs <= lim else "fail"
                res["obs"] = obs
            except OSError:
                res["chamber"] = "fail"
        if self.gps is not None:
            # a receiver talks every second: not heard lately (just booted), listen a moment for it
            for _ in range(GPS_LISTEN_MS // 200):
                if self._gps_heard():
                    break
                self._poll_gps(self._tick())
                await asyncio.sleep_ms(200)
            res["gps"] = "ok" if self._gps_heard() else "fail"
        res["ok"] = "fail" not in (res["heater"], res["chamber"], res["gps"])
        return res

    def _gps_heard(self):
        h = self.gps.heard_ms
        return h is not None and ticks_diff(self.clock_ms(), h) < self.gps_silent_ms

    def feed_nmea(self, line):
        """One NMEA sentence, as if the receiver had sent it (the rig's `nmea` on a real board).
        False when the board has no GPS."""
        if self.gps is None:
            return False
        self.gps.feed_line(line, self.clock_ms())
        return True

# Simulated sensors of the virtual board, driven by the console `sensor` and `nmea` commands.
# The BME680 is simulated at the I2C register level (chip id, calibration, control registers,
# forced mode, field data), so the real driver in drivers/bme680.py runs unchanged on it. Its ADC
# values are found by inverting the same integer compensation the driver applies. The sensor's
# temperature follows the air with a first-order lag, as a real sensor in its housing does.
import math

from compat import ticks_diff, ticks_ms
from drivers import bme680 as chip

# A real sensor's calibration (the Bosch integer-API reference point of the design brief).
REF_CAL = {
    "t1": 26041, "t2": 26469, "t3": 3, "p1": 36673, "p2": -10515, "p3": 88, "p4": 7310, "p5": -129,
    "p6": 30, "p7": 46, "p8": -3177, "p9": -2379, "p10": 30, "h1": 676, "h2": 1029, "h3": 0, "h4": 45,
    "h5": 20, "h6": 120, "h7": -100, "gh1": -30, "gh2": -24754, "gh3": 18, "res_heat_range": 1,
    "res_heat_val": 48, "range_sw_err": 0,
}
DEFAULT_SMOKE_CAL = {"clean": 6000, "per_db": 20000}
NAMES = ("bme680", "heater", "smoke", "gps")
NO_FIX_GGA = b"$GPGGA,,,,,,0,00,99.99,,,,,,*48\r\n"


def _lo(v):
    return v & 0xFF


def _hi(v):
    return (v >> 8) & 0xFF


def encode_calibration(cal, regs):
    """Write a calibration dict into a 256-byte register image (inverse of parse_calibration)."""
    c = bytearray(41)
    c[1], c[2], c[3] = _lo(cal["t2"]), _hi(cal["t2"]), cal["t3"] & 0xFF
    c[5], c[6], c[7], c[8], c[9] = _lo(cal["p1"]), _hi(cal["p1"]), _lo(cal["p2"]), _hi(cal["p2"]), cal["p3"] & 0xFF
    c[11], c[12], c[13], c[14] = _lo(cal["p4"]), _hi(cal["p4"]), _lo(cal["p5"]), _hi(cal["p5"])
    c[15], c[16] = cal["p7"] & 0xFF, cal["p6"] & 0xFF
    c[19], c[20], c[21], c[22], c[23] = _lo(cal["p8"]), _hi(cal["p8"]), _lo(cal["p9"]), _hi(cal["p9"]), cal["p10"]
    c[25] = (cal["h2"] >> 4) & 0xFF
    c[26] = ((cal["h2"] & 0x0F) << 4) | (cal["h1"] & 0x0F)
    c[27] = (cal["h1"] >> 4) & 0xFF
    for i, k in ((28, "h3"), (29, "h4"), (30, "h5"), (31, "h6"), (32, "h7")):
        c[i] = cal[k] & 0xFF
    c[33], c[34], c[35], c[36] = _lo(cal["t1"]), _hi(cal["t1"]), _lo(cal["gh2"]), _hi(cal["gh2"])
    c[37], c[38] = cal["gh1"] & 0xFF, cal["gh3"] & 0xFF
    regs[chip.REG_COEFF1:chip.REG_COEFF1 + 25] = c[:25]
    regs[chip.REG_COEFF2:chip.REG_COEFF2 + 16] = c[25:]
    regs[0x00] = cal["res_heat_val"] & 0xFF
    regs[0x02] = (cal["res_heat_range"] & 0x03) << 4
    regs[0x04] = (cal["range_sw_err"] & 0x0F) << 4
    regs[chip.REG_VARIANT] = 0  # BME680: low-gas variant


def _solve(f, lo, hi, target):
    """Integer x in [lo, hi] with f(x) nearest target, f monotonic (either direction)."""
    up = f(hi) >= f(lo)
    a, b = lo, hi
    while b - a > 1:
        m = (a + b) // 2
        if (f(m) < target) == up:
            a = m
        else:
            b = m
    return a if abs(f(a) - target) <= abs(f(b) - target) else b


def adc_for(cal, t_c, rh, p_pa, gas_ohm):
    """ADC words a BME680 with this calibration reports for the given physical values."""
    t_adc = _solve(lambda x: chip.calc_temperature(chip.calc_t_fine(cal, x)), 0, (1 << 20) - 1,
                   int(round(t_c * 100)))
    tf = chip.calc_t_fine(cal, t_adc)
    p_adc = _solve(lambda x: chip.calc_pressure(cal, tf, x), 0, (1 << 20) - 1, int(round(p_pa)))
    h_adc = _solve(lambda x: chip.calc_humidity(cal, tf, x), 0, 65535, int(round(rh * 1000)))
    best = (1 << 60, 0, 0)  # (error, adc, range): the range that resolves the value best
    for rng in range(16):
        g = _solve(lambda x: chip.calc_gas(cal, x, rng), 0, 1023, gas_ohm)
        err = abs(chip.calc_gas(cal, g, rng) - gas_ohm)
        if err < best[0]:
            best = (err, g, rng)
    return t_adc, p_adc, h_adc, best[1], best[2]


def write_field(regs, t_adc, p_adc, h_adc, gas_adc, gas_range, gas_bits):
    """Fill the field-data registers 0x1D.. as a finished forced measurement leaves them."""
    b = chip.REG_FIELD0
    regs[b] = chip.NEW_DATA
    regs[b + 1] = 0
    regs[b + 2], regs[b + 3], regs[b + 4] = (p_adc >> 12) & 0xFF, (p_adc >> 4) & 0xFF, (p_adc & 0x0F) << 4
    regs[b + 5], regs[b + 6], regs[b + 7] = (t_adc >> 12) & 0xFF, (t_adc >> 4) & 0xFF, (t_adc & 0x0F) << 4
    regs[b + 8], regs[b + 9] = (h_adc >> 8) & 0xFF, h_adc & 0xFF
    regs[b + 13] = (gas_adc >> 2) & 0xFF
    regs[b + 14] = ((gas_adc & 0x03) << 6) | gas_bits | (gas_range & 0x0F)


class SimBME680:
    """Register-level BME680: what a driver reads and writes over I2C."""

    def __init__(self, owner, cal):
        self.owner = owner
        self.cal = cal
        self.regs = bytearray(256)
        encode_calibration(cal, self.regs)
        self.regs[chip.REG_CHIP_ID] = chip.CHIP_ID
        self._n = 0

    def write(self, reg, val):
        if reg == chip.REG_RESET:
            if val == chip.RESET_CMD:
                for r in range(0x50, 0x76):
                    self.regs[r] = 0
                self.regs[chip.REG_FIELD0] = 0
            return
        self.regs[reg] = val
        if reg == chip.REG_CTRL_MEAS and val & 0x03 == chip.MODE_FORCED:
            if not self.owner.stuck:
                self._measure()
            self.regs[reg] = val & 0xFC  # back to sleep, as the chip does when done

    def _measure(self):
        o = self.owner
        o.advance()
        self._n = (self._n * 75 + 74) % 65537  # small-int pseudo-random sequence
        dither = self._n % 33 - 16 if o.noise else 0  # pressure noise of a few Pa, as a real chip shows
        t_adc, p_adc, h_adc, g_adc, g_rng = adc_for(self.cal, o.sensor_t, o.rh, o.p, o.gas)
        bits = 0
        gas_on = self.regs[chip.REG_CTRL_GAS1] & chip.RUN_GAS and not self.regs[chip.REG_CTRL_GAS0] & chip.HEAT_OFF
        if gas_on and self.regs[chip.REG_RES_HEAT0]:
            bits = chip.GAS_VALID | (0 if "heater" in o.unplugged else chip.HEAT_STAB)
        write_field(self.regs, t_adc, max(0, p_adc + dither), h_adc, g_adc, g_rng, bits)


class VirtualI2C:
    """MicroPython I2C interface (readfrom_mem / writeto_mem / scan) onto the simulated chip."""

    def __init__(self, owner, addr=0x77):
        self.owner = owner
        self.addr = addr

    def _dev(self, addr):
        if addr != self.addr or "bme680" in self.owner.unplugged:
            raise OSError(19)  # ENODEV: no ACK on the bus
        return self.owner.bme

    def scan(self):
        return [] if "bme680" in self.owner.unplugged else [self.addr]

    def readfrom_mem(self, addr, reg, n):
        d = self._dev(addr)
        return bytes(d.regs[reg:reg + n])

    def writeto_mem(self, addr, reg, buf):
        d = self._dev(addr)
        for i in range(len(buf)):
            d.write(reg + i, buf[i])


class VirtualADC:
    """Smoke chamber photodiode on a 16-bit ADC: raw = clean + obs * per_db."""

    def __init__(self, owner):
        self.owner = owner
        self._n = 0

    def read_u16(self):
        o = self.owner
        if "smoke" in o.unplugged:
            return 0  # open input reads at the rail
        self._n += 1
        raw = o.smoke_cal["clean"] + o.obs * o.smoke_cal["per_db"] + (((self._n * 37) % 9) - 4 if o.noise else 0)
        return max(0, min(65535, int(raw)))


class VirtualUart:
    """A GPS receiver on a UART: it repeats the sentences last fed by `nmea` once a second, and a
    no-fix GGA when none were fed, like a receiver that talks all the time."""

    def __init__(self, owner):
        self.owner = owner
        self.buf = b""
        self.last = []
        self._last_ms = None
        self._fresh = False

    def feed(self, line):
        if isinstance(line, str):
            line = line.encode()
        line = line.strip() + b"\r\n"
        if not self._fresh:
            self.last = []
        self.last.append(line)
        self._fresh = True
        self.buf += line

    def read(self):
        o = self.owner
        if "gps" in o.unplugged:
            self.buf = b""
            return None
        now = o.clock_ms()
        if self._last_ms is None or ticks_diff(now, self._last_ms) >= 1000:
            if self._last_ms is not None and not self._fresh:
                self.buf += b"".join(self.last) if self.last else NO_FIX_GGA
            self._last_ms = now
            self._fresh = False
        if not self.buf:
            return None
        out, self.buf = self.buf, b""
        return out


class VirtualSensors:
    """The simulated sensors; `set(**fields)` is the console `sensor` command."""

    def __init__(self, lag_tau_s=30, clock_ms=None, cal=None, smoke_cal=None, t=25.0, rh=50.0,
                 p=101325, gas=120000, obs=0.0, noise=True):
        self.clock_ms = clock_ms or ticks_ms
        self.noise = noise  # a few LSB of reading noise, so the stuck-sensor monitor sees a live chip
        self.tau = lag_tau_s
        self.air_t = t
        self.sensor_t = t
        self.rh = rh
        self.p = p
        self.gas = gas
        self.obs = obs
        self.smoke_cal = smoke_cal or DEFAULT_SMOKE_CAL
        self.unplugged = []
        self.stuck = False  # the BME680 keeps answering with its last measurement
        self._at = self.clock_ms()
        self.bme = SimBME680(self, cal or REF_CAL)
        self._i2c = VirtualI2C(self)
        self._adc = VirtualADC(self)
        self._uart = VirtualUart(self)

    # what the virtual board hands out as board.i2c(), board.smoke_adc(), board.gps_uart()
    def i2c(self):
        return self._i2c

    def smoke_adc(self):
        return self._adc

    def gps_uart(self):
        return self._uart

    def advance(self):
        """Move the sensor temperature toward the air temperature for the time elapsed."""
        now = self.clock_ms()
        dt = ticks_diff(now, self._at) / 1000
        self._at = now
        if dt > 0:
            k = 1 - math.exp(-dt / self.tau) if self.tau > 0 else 1
            self.sensor_t += (self.air_t - self.sensor_t) * k

    def set(self, **f):
        """Console `sensor` fields: t rh p gas obs tau (numbers), unplug / plug (lists of names from
        NAMES), stuck (bool: the BME680 stops measuring but still answers)."""
        for k in f:
            if k not in ("t", "rh", "p", "gas", "obs", "tau", "unplug", "plug", "stuck"):
                raise ValueError("unknown sensor field '%s'" % k)
        for k in ("unplug", "plug"):
            for n in f.get(k) or ():
                if n not in NAMES:
                    raise ValueError("unknown sensor '%s' (%s)" % (n, ", ".join(NAMES)))
        self.advance()
        if "t" in f:
            self.air_t = float(f["t"])
        if "tau" in f:
            self.tau = float(f["tau"])
        if "rh" in f:
            self.rh = min(100.0, max(0.0, float(f["rh"])))
        if "p" in f:
            self.p = float(f["p"])
        if "gas" in f:
            self.gas = int(f["gas"])
        if "obs" in f:
            self.obs = float(f["obs"])
        if "stuck" in f:
            self.stuck = bool(f["stuck"])
        for n in f.get("unplug") or ():
            if n not in self.unplugged:
                self.unplugged.append(n)
        for n in f.get("plug") or ():
            if n in self.unplugged:
                self.unplugged.remove(n)

    def state(self):
        return {"t": self.air_t, "sensor_t": round(self.sensor_t, 2), "rh": self.rh, "p": self.p,
                "gas": self.gas, "obs": self.obs, "tau": self.tau, "unplugged": list(self.unplugged),
                "stuck": self.stuck}

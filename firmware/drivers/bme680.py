# BME680 over I2C (MicroPython I2C interface: readfrom_mem / writeto_mem), forced mode.
# Register map, calibration layout and the INTEGER compensation formulas follow the Bosch BME680
# datasheet (BST-BME680-DS001) and the Bosch BME68x Sensor API (bme68x.c, BSD-3-Clause): the
# compensation functions below are pure functions over a calibration dict, so they are testable
# without hardware and shared with the simulated sensor of the virtual board.

CHIP_ID = 0x61
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
RESET_CMD = 0xB6
REG_VARIANT = 0xF0
REG_COEFF1 = 0x89  # 25 bytes, 0x89..0xA1
REG_COEFF2 = 0xE1  # 16 bytes, 0xE1..0xF0
REG_COEFF3 = 0x00  # 5 bytes, 0x00..0x04: res_heat_val, res_heat_range, range_sw_err
REG_FIELD0 = 0x1D  # meas_status_0 .. gas_r_lsb, 15 bytes
FIELD_LEN = 15
REG_IDAC_HEAT0 = 0x50
REG_RES_HEAT0 = 0x5A
REG_GAS_WAIT0 = 0x64
REG_CTRL_GAS0 = 0x70
REG_CTRL_GAS1 = 0x71
REG_CTRL_HUM = 0x72
REG_CTRL_MEAS = 0x74
REG_CONFIG = 0x75

NEW_DATA = 0x80
GAS_VALID = 0x20
HEAT_STAB = 0x10
RUN_GAS = 0x10
HEAT_OFF = 0x08
MODE_FORCED = 0x01

# Oversampling / filter: setting value -> register code.
OSRS = {0: 0, 1: 1, 2: 2, 4: 3, 8: 4, 16: 5}
FILTERS = {0: 0, 1: 1, 3: 2, 7: 3, 15: 4, 31: 5, 63: 6, 127: 7}

# BME680 (low-gas variant) gas-range lookup tables, from the Bosch BME68x API.
GAS_LUT1 = (2147483647, 2147483647, 2147483647, 2147483647, 2147483647, 2126008810, 2147483647,
            2130303777, 2147483647, 2147483647, 2143188679, 2136746228, 2147483647, 2126008810,
            2147483647, 2147483647)
GAS_LUT2 = (4096000000, 2048000000, 1024000000, 512000000, 255744255, 127110228, 64000000, 32258064,
            16016016, 8000000, 4000000, 2000000, 1000000, 500000, 250000, 125000)


def _s8(b):
    return b - 256 if b > 127 else b


def _u16(lo, hi):
    return lo | (hi << 8)


def _s16(lo, hi):
    v = lo | (hi << 8)
    return v - 65536 if v > 32767 else v


def _tdiv(a, b):
    # C integer division truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def parse_calibration(c1, c2, c3):
    """Calibration dict from the three raw blocks (25 bytes at 0x89, 16 at 0xE1, 5 at 0x00)."""
    c = c1 + c2  # indices as in Bosch's 41-byte coefficient array
    return {
        "t1": _u16(c[33], c[34]), "t2": _s16(c[1], c[2]), "t3": _s8(c[3]),
        "p1": _u16(c[5], c[6]), "p2": _s16(c[7], c[8]), "p3": _s8(c[9]),
        "p4": _s16(c[11], c[12]), "p5": _s16(c[13], c[14]), "p6": _s8(c[16]), "p7": _s8(c[15]),
        "p8": _s16(c[19], c[20]), "p9": _s16(c[21], c[22]), "p10": c[23],
        "h1": (c[27] << 4) | (c[26] & 0x0F), "h2": (c[25] << 4) | (c[26] >> 4),
        "h3": _s8(c[28]), "h4": _s8(c[29]), "h5": _s8(c[30]), "h6": c[31], "h7": _s8(c[32]),
        "gh1": _s8(c[37]), "gh2": _s16(c[35], c[36]), "gh3": _s8(c[38]),
        "res_heat_val": _s8(c3[0]), "res_heat_range": (c3[2] & 0x30) >> 4,
        "range_sw_err": _s8(c3[4] & 0xF0) >> 4,
    }


def calc_t_fine(cal, t_adc):
    var1 = (t_adc >> 3) - (cal["t1"] << 1)
    var2 = (var1 * cal["t2"]) >> 11
    var3 = ((var1 >> 1) * (var1 >> 1)) >> 12
    var3 = (var3 * (cal["t3"] << 4)) >> 14
    return var2 + var3


def calc_temperature(t_fine):
    """Temperature in centi-degrees Celsius."""
    return ((t_fine * 5) + 128) >> 8


def calc_pressure(cal, t_fine, p_adc):
    """Pressure in Pa."""
    var1 = (t_fine >> 1) - 64000
    var2 = ((((var1 >> 2) * (var1 >> 2)) >> 11) * cal["p6"]) >> 2
    var2 = var2 + ((var1 * cal["p5"]) << 1)
    var2 = (var2 >> 2) + (cal["p4"] << 16)
    var1 = (((((var1 >> 2) * (var1 >> 2)) >> 13) * (cal["p3"] << 5)) >> 3) + ((cal["p2"] * var1) >> 1)
    var1 = var1 >> 18
    var1 = ((32768 + var1) * cal["p1"]) >> 15
    if var1 == 0:
        return 0
    comp = 1048576 - p_adc
    comp = (comp - (var2 >> 12)) * 3125
    # Bosch's BME680 driver does this step in unsigned 32 bits: doubling first keeps a bit of
    # precision whenever it cannot overflow (this reproduces the datasheet reference point).
    if comp >= 0x80000000:
        comp = _tdiv(comp, var1) << 1
    else:
        comp = _tdiv(comp << 1, var1)
    var1 = (cal["p9"] * (((comp >> 3) * (comp >> 3)) >> 13)) >> 12
    var2 = ((comp >> 2) * cal["p8"]) >> 13
    var3 = ((comp >> 8) * (comp >> 8) * (comp >> 8) * cal["p10"]) >> 17
    return comp + ((var1 + var2 + var3 + (cal["p7"] << 7)) >> 4)


def calc_humidity(cal, t_fine, h_adc):
    """Relative humidity in milli-%RH, clamped to 0..100000."""
    ts = ((t_fine * 5) + 128) >> 8
    var1 = (h_adc - cal["h1"] * 16) - (_tdiv(ts * cal["h3"], 100) >> 1)
    var2 = (cal["h2"] * (_tdiv(ts * cal["h4"], 100)
                         + _tdiv((ts * _tdiv(ts * cal["h5"], 100)) >> 6, 100) + (1 << 14))) >> 10
    var3 = var1 * var2
    var4 = ((cal["h6"] << 7) + _tdiv(ts * cal["h7"], 100)) >> 4
    var5 = ((var3 >> 14) * (var3 >> 14)) >> 10
    var6 = (var4 * var5) >> 1
    hum = (((var3 + var6) >> 10) * 1000) >> 12
    return 100000 if hum > 100000 else (0 if hum < 0 else hum)


def calc_gas(cal, gas_adc, gas_range):
    """Gas resistance in Ohm (BME680 low-gas variant)."""
    var1 = ((1340 + 5 * cal["range_sw_err"]) * GAS_LUT1[gas_range]) >> 16
    var2 = (gas_adc << 15) - 16777216 + var1
    var3 = (GAS_LUT2[gas_range] * var1) >> 9
    return _tdiv(var3 + (var2 >> 1), var2)


def calc_res_heat(cal, target_c, amb_c=25):
    """Heater target temperature -> res_heat_x register code (integer Bosch formula)."""
    if target_c > 400:
        target_c = 400
    var1 = _tdiv(amb_c * cal["gh3"], 1000) * 256
    var2 = (cal["gh1"] + 784) * _tdiv(_tdiv((cal["gh2"] + 154009) * target_c * 5, 100) + 3276800, 10)
    var3 = var1 + _tdiv(var2, 2)
    var4 = _tdiv(var3, cal["res_heat_range"] + 4)
    var5 = 131 * cal["res_heat_val"] + 65536
    x100 = (_tdiv(var4, var5) - 250) * 34
    return _tdiv(x100 + 50, 100) & 0xFF


def calc_gas_wait(ms):
    """Heater duration in ms -> gas_wait_x code (6-bit value, 2-bit multiplier x1/x4/x16/x64)."""
    if ms >= 0xFC0:
        return 0xFF
    factor = 0
    while ms > 0x3F:
        ms //= 4
        factor += 1
    return ms + factor * 64


def decode_field(cal, f):
    """Field data block (15 bytes from 0x1D) -> dict of readings; None when there is no new data."""
    if not f[0] & NEW_DATA:
        return None
    p_adc = (f[2] << 12) | (f[3] << 4) | (f[4] >> 4)
    t_adc = (f[5] << 12) | (f[6] << 4) | (f[7] >> 4)
    h_adc = (f[8] << 8) | f[9]
    gas_adc = (f[13] << 2) | (f[14] >> 6)
    gas_range = f[14] & 0x0F
    tf = calc_t_fine(cal, t_adc)
    out = {
        "t": calc_temperature(tf) / 100,
        "p": calc_pressure(cal, tf, p_adc),
        "rh": calc_humidity(cal, tf, h_adc) / 1000,
        "gas": None,
        "heat_stab": bool(f[14] & HEAT_STAB),
    }
    if f[14] & GAS_VALID and f[14] & HEAT_STAB:
        out["gas"] = calc_gas(cal, gas_adc, gas_range)
    return out


class ChipIdError(Exception):
    """Something answers at the address, but it is not a BME680."""


class BME680:
    """One BME680 at `addr`. OSError when nothing answers; ChipIdError when it is not a BME680."""

    def __init__(self, i2c, addr=0x77, osrs_t=8, osrs_p=4, osrs_h=2, iir=3, heater_c=320,
                 heater_ms=150, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self.osrs = (OSRS[osrs_t], OSRS[osrs_p], OSRS[osrs_h])
        self.iir = FILTERS[iir]
        self.heater_c = heater_c
        self.heater_ms = heater_ms
        self.amb_c = 25
        self._sleep_ms = sleep_ms
        self.cal = None
        self.init()

    def _w(self, reg, val):
        self.i2c.writeto_mem(self.addr, reg, bytes((val,)))

    def _r(self, reg, n):
        return self.i2c.readfrom_mem(self.addr, reg, n)

    def _sleep(self, ms):
        if self._sleep_ms:
            self._sleep_ms(ms)
        else:
            import time

            time.sleep_ms(ms) if hasattr(time, "sleep_ms") else time.sleep(ms / 1000)

    def init(self):
        chip = self._r(REG_CHIP_ID, 1)[0]
        if chip != CHIP_ID:
            raise ChipIdError("chip id 0x%02x, want 0x61" % chip)
        self._w(REG_RESET, RESET_CMD)
        self._sleep(5)
        self.cal = parse_calibration(self._r(REG_COEFF1, 25), self._r(REG_COEFF2, 16), self._r(REG_COEFF3, 5))
        self._w(REG_CONFIG, self.iir << 2)
        self._w(REG_CTRL_HUM, self.osrs[2])
        self._w(REG_CTRL_MEAS, (self.osrs[0] << 5) | (self.osrs[1] << 2))
        self.set_heater(self.heater_c, self.heater_ms)

    def set_heater(self, target_c, ms):
        """Heater profile 0; target_c None switches the heater and the gas measurement off."""
        if target_c is None:
            self._w(REG_CTRL_GAS0, HEAT_OFF)
            self._w(REG_CTRL_GAS1, 0)
            return
        self._w(REG_RES_HEAT0, calc_res_heat(self.cal, target_c, int(self.amb_c)))
        self._w(REG_GAS_WAIT0, calc_gas_wait(ms))
        self._w(REG_CTRL_GAS0, 0)
        self._w(REG_CTRL_GAS1, RUN_GAS)  # profile 0

    def measure_ms(self):
        """Estimated time of one forced measurement (datasheet: 1.963 ms per oversampling cycle...)."""
        cycles = 0
        for code in self.osrs:
            cycles += (0, 1, 2, 4, 8, 16)[code]
        return (cycles * 1963 + 477 * 4 + 477 * 5 + 999) // 1000 + 1 + self.heater_ms

    def start(self):
        """Trigger one forced-mode measurement."""
        self._w(REG_CTRL_MEAS, (self.osrs[0] << 5) | (self.osrs[1] << 2) | MODE_FORCED)

    def result(self):
        """The measurement's readings (t degC, p Pa, rh %RH, gas Ohm or None), or None if not ready."""
        r = decode_field(self.cal, self._r(REG_FIELD0, FIELD_LEN))
        if r is not None:
            self.amb_c = r["t"]
        return r

    def read(self, timeout_ms=1000):
        """Blocking forced measurement; None on timeout."""
        self.start()
        self._sleep(self.measure_ms())
        waited = 0
        while True:
            r = self.result()
            if r is not None or waited >= timeout_ms:
                return r
            self._sleep(10)
            waited += 10

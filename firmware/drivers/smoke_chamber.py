# Optical smoke chamber: an IR LED and a photodiode on an ADC input. Scattered light grows with
# smoke, so the raw reading rises above its clean-air value. The calibration in the device config
# (`smoke_cal`: {"clean": raw count in clean air, "per_db": raw counts per dB/m}) turns it into an
# obscuration in dB/m, the unit EN 54-7 states thresholds in.

DEFAULT_CAL = {"clean": 6000, "per_db": 20000}


def check_cal(cal):
    """Validated calibration dict; ValueError naming the bad key."""
    cal = cal or DEFAULT_CAL
    for k in ("clean", "per_db"):
        v = cal.get(k)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ValueError("smoke_cal: '%s' must be a number" % k)
    if not 0 <= cal["clean"] < 65535:
        raise ValueError("smoke_cal: 'clean' out of ADC range")
    if cal["per_db"] <= 0:
        raise ValueError("smoke_cal: 'per_db' must be positive")
    return cal


def obscuration(raw, cal):
    """Raw ADC count -> dB/m (negative when cleaner than the calibration)."""
    return (raw - cal["clean"]) / cal["per_db"]


class SmokeChamber:
    """Averages a few ADC samples per reading to take out photodiode noise."""

    def __init__(self, adc, cal=None, samples=4):
        self.adc = adc
        self.cal = check_cal(cal)
        self.samples = samples
        self.raw = None

    def read(self):
        """Obscuration in dB/m (3 decimals)."""
        total = 0
        for _ in range(self.samples):
            total += self.adc.read_u16()
        self.raw = total // self.samples
        v = round(obscuration(self.raw, self.cal), 3)
        return 0.0 if v == 0 else v  # no "-0.0" in telemetry

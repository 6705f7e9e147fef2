# NMEA 0183 from a GPS UART: a line assembler that survives split reads and garbage, checksum
# verification, and parsers for GGA, RMC, GSA and GSV from any talker (GP, GN, GL, GA, BD, ...).
#
# Accuracy model: horizontal error (1 sigma, metres) ~ HDOP x UERE, with a user-equivalent range
# error UERE of 5 m for a consumer receiver without corrections (4.0 m floor for DGPS/RTK fixes is
# not modelled: they are rare on our boards). A fix without HDOP gets 50 m.

UERE_M = 5.0
MAX_LINE = 100  # NMEA says 82 incl. CR LF; allow some slack for proprietary talkers


def checksum(body):
    """XOR of the characters between '$' and '*'."""
    x = 0
    for ch in body:
        x ^= ch if isinstance(ch, int) else ord(ch)
    return x


def split_sentence(line):
    """'$GPGGA,...*hh' -> list of fields ('GPGGA', ...) when the checksum holds; else None."""
    if isinstance(line, (bytes, bytearray)):
        try:
            line = line.decode()
        except Exception:
            return None
    line = line.strip()
    if len(line) < 9 or line[0] not in "$!" or line[-3] != "*":
        return None
    body = line[1:-3]
    try:
        want = int(line[-2:], 16)
    except ValueError:
        return None
    if checksum(body) != want:
        return None
    fields = body.split(",")
    if len(fields[0]) != 5:
        return None
    return fields


def _deg(value, hemi):
    # ddmm.mmmm / dddmm.mmmm -> signed decimal degrees
    if not value or not hemi:
        return None
    try:
        dot = value.find(".")
        head = dot if dot >= 0 else len(value)
        d = int(value[:head - 2])
        m = float(value[head - 2:])
    except ValueError:
        return None
    v = d + m / 60
    return -v if hemi in ("S", "W") else v


def _f(s):
    try:
        return float(s) if s else None
    except ValueError:
        return None


def _i(s):
    try:
        return int(s) if s else None
    except ValueError:
        return None


def _hms(s):
    # hhmmss(.ss) -> seconds of the day
    if not s or len(s) < 6:
        return None
    try:
        return int(s[0:2]) * 3600 + int(s[2:4]) * 60 + float(s[4:])
    except ValueError:
        return None


def parse(line):
    """One sentence -> dict with 'type' (GGA, RMC, GSA, GSV) and 'talker'; None if invalid/unknown."""
    f = split_sentence(line)
    if f is None:
        return None
    talker, kind = f[0][:2], f[0][2:]
    out = {"type": kind, "talker": talker}
    n = len(f)
    if kind == "GGA" and n >= 10:
        out["time"] = _hms(f[1])
        out["lat"] = _deg(f[2], f[3])
        out["lon"] = _deg(f[4], f[5])
        out["quality"] = _i(f[6]) or 0
        out["sats"] = _i(f[7])
        out["hdop"] = _f(f[8])
        out["alt"] = _f(f[9])
    elif kind == "RMC" and n >= 10:
        out["time"] = _hms(f[1])
        out["valid"] = f[2] == "A"
        out["lat"] = _deg(f[3], f[4])
        out["lon"] = _deg(f[5], f[6])
        out["speed_kn"] = _f(f[7])
        out["course"] = _f(f[8])
        d = f[9]
        out["date"] = (2000 + int(d[4:6]), int(d[2:4]), int(d[0:2])) if len(d) == 6 and d.isdigit() else None
    elif kind == "GSA" and n >= 18:
        out["fix_type"] = _i(f[2]) or 1
        out["prns"] = [int(x) for x in f[3:15] if x.isdigit()]
        out["pdop"], out["hdop"], out["vdop"] = _f(f[15]), _f(f[16]), _f(f[17])
    elif kind == "GSV" and n >= 4:
        out["msgs"], out["msg"], out["in_view"] = _i(f[1]), _i(f[2]), _i(f[3])
    else:
        return None
    return out


def accuracy_m(hdop):
    """Estimated horizontal accuracy (1 sigma, metres) from HDOP."""
    if hdop is None or hdop <= 0:
        return 50
    return max(1, int(hdop * UERE_M + 0.5))


class LineAssembler:
    """Bytes in any chunking -> complete sentence lines; overlong runs and noise are dropped."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        lines = []
        if not data:
            return lines
        buf = self.buf + bytes(data)
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[:i], buf[i + 1:]
            s = line.rfind(b"$")  # a sentence starts at its last '$' (garbage before it is dropped)
            if s >= 0:
                lines.append(line[s:].strip())
        if len(buf) > MAX_LINE:
            s = buf.rfind(b"$")
            buf = buf[s:] if s >= 0 and len(buf) - s <= MAX_LINE else b""
        self.buf = buf
        return lines


class GPS:
    """Reads the UART, keeps the latest fix: (lat, lon, acc_m, at_ms) with at_ms the time it was heard."""

    def __init__(self, uart):
        self.uart = uart
        self.lines = LineAssembler()
        self.fix = None
        self.quality = 0
        self.hdop = None
        self.sats = None
        self.utc = None  # seconds of day of the last valid fix, as the receiver reported it
        self.date = None
        self.heard_ms = None  # last time any valid sentence arrived
        self.sentences = 0
        self.bad = 0

    def poll(self, now_ms):
        """Drain the UART; returns the number of valid sentences taken in."""
        n = 0
        while True:
            data = self.uart.read() if self.uart is not None else None
            if not data:
                break
            for line in self.lines.feed(data):
                if self.feed_line(line, now_ms):
                    n += 1
        return n

    def feed_line(self, line, now_ms):
        s = parse(line)
        if s is None:
            self.bad += 1
            return False
        self.sentences += 1
        self.heard_ms = now_ms
        kind = s["type"]
        if kind == "GGA":
            self.quality = s["quality"]
            self.sats = s["sats"]
            if s["hdop"] is not None:
                self.hdop = s["hdop"]
            if s["quality"] > 0 and s["lat"] is not None and s["lon"] is not None:
                self.fix = (s["lat"], s["lon"], accuracy_m(s["hdop"]), now_ms)
                self.utc = s["time"]
            elif s["quality"] == 0:
                self.fix = None  # the receiver says it has lost the fix
        elif kind == "RMC":
            if s["valid"] and s["lat"] is not None and s["lon"] is not None:
                acc = accuracy_m(self.hdop)
                self.fix = (s["lat"], s["lon"], acc, now_ms)
                self.utc = s["time"]
                self.date = s["date"]
            elif not s["valid"]:
                self.fix = None
        elif kind == "GSA":
            if s["hdop"] is not None:
                self.hdop = s["hdop"]
        return True

# NMEA 0183: checksums, GGA / RMC / GSA / GSV from any talker, split reads and garbage.
from drivers.gps import GPS, LineAssembler, accuracy_m, checksum, parse


def nmea(body):
    return "$%s*%02X" % (body, checksum(body))


GGA = nmea("GPGGA,092750.000,2101.7107,N,10548.2890,E,1,8,1.03,61.7,M,55.2,M,,")
RMC = nmea("GNRMC,092751.000,A,1047.4520,N,10640.1234,E,0.02,31.66,280511,,,A")


class FakeUart:
    def __init__(self, chunks):
        self.chunks = list(chunks)

    def read(self):
        return self.chunks.pop(0) if self.chunks else None


def test_checksum_verified():
    assert parse(GGA) is not None
    bad = GGA[:-2] + ("00" if GGA[-2:] != "00" else "01")
    assert parse(bad) is None
    assert parse(GGA.replace("2101.7107", "2101.7108")) is None
    assert parse("$GPGGA,092750.000,2101.7107,N") is None  # truncated, no checksum


def test_gga_fields():
    s = parse(GGA)
    assert s["type"] == "GGA" and s["talker"] == "GP"
    assert abs(s["lat"] - (21 + 1.7107 / 60)) < 1e-9
    assert abs(s["lon"] - (105 + 48.2890 / 60)) < 1e-9
    assert s["quality"] == 1 and s["sats"] == 8 and s["hdop"] == 1.03 and s["alt"] == 61.7
    assert s["time"] == 9 * 3600 + 27 * 60 + 50


def test_rmc_fields_and_hemispheres():
    s = parse(RMC)
    assert s["type"] == "RMC" and s["talker"] == "GN" and s["valid"]
    assert s["date"] == (2011, 5, 28)
    south = parse(nmea("GARMC,000001.00,A,3351.0000,S,15112.0000,W,,,010125,,,A"))
    assert south["lat"] == -(33 + 51 / 60) and south["lon"] == -(151 + 12 / 60)


def test_other_talkers_and_sentences():
    for talker in ("GP", "GN", "GL", "GA", "BD"):
        assert parse(nmea(talker + "GGA,010203,2101.0,N,10548.0,E,1,5,2.0,10,M,0,M,,"))["talker"] == talker
    gsa = parse(nmea("GNGSA,A,3,01,02,03,04,,,,,,,,,1.80,1.00,1.50"))
    assert gsa["fix_type"] == 3 and gsa["prns"] == [1, 2, 3, 4] and gsa["hdop"] == 1.0
    gsv = parse(nmea("GPGSV,3,1,11,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45"))
    assert gsv["in_view"] == 11 and gsv["msgs"] == 3
    assert parse(nmea("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K")) is None  # not a sentence we use


def test_accuracy_model():
    assert accuracy_m(1.0) == 5
    assert accuracy_m(2.5) == 13
    assert accuracy_m(None) == 50
    assert accuracy_m(0.1) == 1


def test_assembler_survives_split_reads_and_garbage():
    a = LineAssembler()
    data = ("\x00\xff noise" + GGA + "\r\n" + RMC + "\r\n").encode("latin-1")
    lines = []
    for i in range(0, len(data), 7):
        lines += a.feed(data[i:i + 7])
    assert [x.decode() for x in lines] == [GGA, RMC]
    assert a.feed(b"x" * 500) == [] and len(a.buf) <= 100  # an endless line does not grow memory
    assert a.feed(("\r\n" + GGA + "\r\n").encode()) == [GGA.encode()]


def test_gps_keeps_latest_fix_and_drops_it_on_no_fix():
    g = GPS(FakeUart([(GGA + "\r\n")[:20].encode(), (GGA + "\r\n")[20:].encode()]))
    assert g.poll(1000) == 1
    lat, lon, acc, at = g.fix
    assert abs(lat - 21.028512) < 1e-6 and acc == 5 and at == 1000
    g.uart = FakeUart([(nmea("GPGGA,,,,,,0,00,99.99,,,,,,") + "\r\n").encode()])
    g.poll(2000)
    assert g.fix is None and g.heard_ms == 2000
    g.uart = FakeUart([(nmea("GPRMC,092751.000,V,,,,,,,280511,,,N") + "\r\n").encode()])
    g.poll(3000)
    assert g.fix is None and g.sentences == 3


def test_rmc_fix_uses_last_hdop():
    g = GPS(FakeUart([(nmea("GNGSA,A,3,01,02,03,04,,,,,,,,,4.0,3.0,2.0") + "\r\n" + RMC + "\r\n").encode()]))
    g.poll(5)
    assert g.fix[2] == 15
    assert g.bad == 0


def test_bad_lines_are_counted_not_taken():
    g = GPS(FakeUart([b"$GPGGA,1,2*00\r\n", b"hello\r\n"]))
    assert g.poll(0) == 0
    assert g.fix is None and g.heard_ms is None

"""Our NMEA parser against pynmea2, sentence by sentence, on a corpus of receiver-like sentences:
fixes from several talkers, no-fix, status V, bad checksums, truncated lines."""

import datetime

import pynmea2
import pytest
from drivers.gps import GPS, accuracy_m, checksum, parse


def nmea(body):
    return f"${body}*{checksum(body):02X}"


GOOD = [
    nmea("GPGGA,092750.000,2101.7107,N,10548.2890,E,1,8,1.03,61.7,M,55.2,M,,"),
    nmea("GNGGA,031956.00,1047.45204,N,10640.12345,E,2,12,0.71,9.4,M,-2.1,M,,0000"),
    nmea("GLGGA,235959.50,1603.9921,N,10812.3011,E,1,05,2.40,5.0,M,1.0,M,,"),
    nmea("GAGGA,120000.00,3351.0000,S,15112.0000,E,1,07,1.5,30,M,20,M,,"),
    nmea("BDGGA,010101.00,4043.5000,N,07400.2500,W,1,06,3.1,12.5,M,-33.0,M,,"),
    nmea("GPGGA,,,,,,0,00,99.99,,,,,,"),  # no fix yet
    nmea("GPGGA,092751.000,,,,,0,3,,,M,,M,,"),  # no fix, some satellites
    nmea("GPRMC,092751.000,A,2101.7107,N,10548.2890,E,0.02,31.66,280511,,,A"),
    nmea("GNRMC,031957.00,A,1047.45204,N,10640.12345,E,0.013,,291125,,,D,V"),
    nmea("GPRMC,092752.000,V,,,,,,,280511,,,N"),  # status V: no valid fix
    nmea("BDRMC,010102.00,A,4043.5000,N,07400.2500,W,5.5,270.0,010125,,,A"),
    nmea("GNGSA,A,3,01,02,03,04,05,,,,,,,,1.80,1.00,1.50"),
    nmea("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
    nmea("GPGSV,3,1,11,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45"),
    nmea("GLGSV,1,1,02,65,30,100,35,66,45,200,40"),
]
BAD = [
    GOOD[0][:-2] + ("00" if GOOD[0][-2:] != "00" else "11"),  # wrong checksum
    GOOD[7].replace("2101.7107", "2101.7106"),  # corrupted on the wire
    GOOD[0][:30],  # truncated: no checksum
    GOOD[7][:-4],  # truncated inside the checksum
]


def ours_and_theirs(line):
    return parse(line), pynmea2.parse(line, check=True)


@pytest.mark.parametrize("line", [s for s in GOOD if s[3:6] == "GGA"])
def test_gga_matches(line):
    o, t = ours_and_theirs(line)
    assert o["talker"] == t.talker and o["type"] == t.sentence_type
    assert o["quality"] == int(t.gps_qual or 0)
    assert o["sats"] == (int(t.num_sats) if t.num_sats else None)
    assert o["hdop"] == (float(t.horizontal_dil) if t.horizontal_dil else None)
    assert o["alt"] == (float(t.altitude) if t.altitude is not None else None)
    if t.lat:
        assert o["lat"] == pytest.approx(t.latitude, abs=1e-9)
        assert o["lon"] == pytest.approx(t.longitude, abs=1e-9)
    else:
        assert o["lat"] is None and o["lon"] is None
    if t.timestamp:
        ts = t.timestamp
        assert o["time"] == pytest.approx(ts.hour * 3600 + ts.minute * 60 + ts.second + ts.microsecond / 1e6)


@pytest.mark.parametrize("line", [s for s in GOOD if s[3:6] == "RMC"])
def test_rmc_matches(line):
    o, t = ours_and_theirs(line)
    assert o["valid"] == (t.status == "A")
    if t.lat:
        assert o["lat"] == pytest.approx(t.latitude, abs=1e-9)
        assert o["lon"] == pytest.approx(t.longitude, abs=1e-9)
    if t.datestamp:
        assert datetime.date(*o["date"]) == t.datestamp
    if t.spd_over_grnd is not None:
        assert o["speed_kn"] == pytest.approx(float(t.spd_over_grnd))


@pytest.mark.parametrize("line", [s for s in GOOD if s[3:6] == "GSA"])
def test_gsa_matches(line):
    o, t = ours_and_theirs(line)
    assert o["fix_type"] == int(t.mode_fix_type)
    assert (o["pdop"], o["hdop"], o["vdop"]) == (float(t.pdop), float(t.hdop), float(t.vdop))


@pytest.mark.parametrize("line", [s for s in GOOD if s[3:6] == "GSV"])
def test_gsv_matches(line):
    o, t = ours_and_theirs(line)
    assert (o["msgs"], o["msg"], o["in_view"]) == (int(t.num_messages), int(t.msg_num), int(t.num_sv_in_view))


@pytest.mark.parametrize("line", BAD)
def test_bad_lines_rejected_by_both(line):
    assert parse(line) is None
    with pytest.raises(pynmea2.ParseError):  # ChecksumError is a ParseError
        pynmea2.parse(line, check=True)


def test_stream_of_corpus_gives_the_last_fix_like_pynmea2_reading():
    class Uart:
        def __init__(self, data):
            self.data = data

        def read(self):
            d, self.data = self.data[:13], self.data[13:]
            return d or None

    stream = "\r\n".join(["garbage$$", *BAD, *GOOD[:5]]) + "\r\n"
    g = GPS(Uart(stream.encode()))
    g.poll(1234)
    last = pynmea2.parse(GOOD[4], check=True)
    assert g.fix[0] == pytest.approx(last.latitude) and g.fix[1] == pytest.approx(last.longitude)
    assert g.fix[2] == accuracy_m(float(last.horizontal_dil)) and g.fix[3] == 1234
    assert g.sentences == 5

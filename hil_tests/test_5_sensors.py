"""Sensors. Virtual boards: heat and smoke injected through the console raise sensor alarms with their
readings as evidence; GPS sentences fed to the board move the alarm's location. Real boards: the
BME680's own readings, as the board reports them in its telemetry, are plausible for a room.
Thresholds: firmware/detect/heat.py and firmware/detect/smoke.py (EN 54-5 A1R, EN 54-7)."""

from __future__ import annotations

import functools
import json
import operator

import pytest

from firmware import protocol_host as protocol
from hil_tests.harness.flows import DELIVERY_TIMEOUT_S, follow_alarm, press_alarm, wait_ack

SENSOR_ALARM_S = 45  # sampling every second, the lagged sensor, a confirmation period, busy cores
AMBIENT = {"t": 25.0, "rh": 50.0, "obs": 0.0, "tau": 30.0}


def nmea(body: str) -> str:
    """A sentence with its checksum (XOR of the characters between `$` and `*`, NMEA 0183)."""
    return f"${body}*{functools.reduce(operator.xor, body.encode(), 0):02X}"


def gga(lat: float, lon: float, hdop: float = 0.9) -> str:
    def dm(v: float, width: int) -> str:  # degrees and decimal minutes: ddmm.mmmm / dddmm.mmmm
        d = int(abs(v))
        return f"{d:0{width}d}{(abs(v) - d) * 60:07.4f}"

    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return nmea(f"GPGGA,083000.00,{dm(lat, 2)},{ns},{dm(lon, 3)},{ew},1,09,{hdop:.1f},12.0,M,-20.0,M,,")


@pytest.fixture
def virtual_sensors(board, bench):
    if not (bench.virtual or bench.emulated):
        pytest.skip("sensor injection is for virtual and emulated boards; a real board is checked on its "
                    "real readings")
    reply = board.dut.ask("sensor", **AMBIENT)
    assert reply.get("ok"), f"the sensor console command does not work: {reply.get('error')}"
    since = board.dut.mark()
    yield board
    # back to a quiet room, and wait until the detectors agree, so the next scenario starts clean
    board.dut.ask("sensor", **dict(AMBIENT, tau=1.0))
    raised = board.dut.find(lambda m: m.get("ev") == "event" and m.get("type") in ("alarm", "prealarm")
                            and m.get("cause") in ("heat", "smoke", "multi"), since=since)
    if raised:
        board.dut.expect("event", SENSOR_ALARM_S, since=since, type="restore")
    board.dut.ask("sensor", **AMBIENT)


def _sensor_alarm(board, cause: str, since: int) -> dict:
    ev = board.dut.expect(lambda m: m.get("ev") == "event" and m.get("type") == "alarm"
                          and m.get("cause") in (cause, "multi"), SENSOR_ALARM_S, since=since)
    wait_ack(board, ev["id"], "stored", since)
    return ev


def test_heat_injection_raises_heat_alarm(virtual_sensors, observer):
    board = virtual_sensors
    since, seen = board.dut.mark(), observer.mark()
    board.dut.cmd("sensor", t=90.0, tau=2.0)  # a fire next to the sensor; short housing lag
    ev = _sensor_alarm(board, "heat", since)
    topic = protocol.topic(board.dev, "event")
    _, _, frame, _ = observer.wait(lambda m: m[1] == topic and f'"id":"{ev["id"]}"'.encode() in m[2],
                                   DELIVERY_TIMEOUT_S, since=seen)
    data = json.loads(frame.split(b"\n", 1)[0])["data"]
    assert data["t"] >= AMBIENT["t"] + 15, f"the alarm's evidence shows the heat: {data}"


def test_smoke_injection_raises_smoke_alarm(virtual_sensors, observer):
    board = virtual_sensors
    since, seen = board.dut.mark(), observer.mark()
    board.dut.cmd("sensor", obs=0.4)  # above EN 54-7's 0.05-0.3 dB/m response band
    ev = _sensor_alarm(board, "smoke", since)
    topic = protocol.topic(board.dev, "event")
    _, _, frame, _ = observer.wait(lambda m: m[1] == topic and f'"id":"{ev["id"]}"'.encode() in m[2],
                                   DELIVERY_TIMEOUT_S, since=seen)
    data = json.loads(frame.split(b"\n", 1)[0])["data"]
    assert data["obs"] >= 0.3, f"the alarm's evidence shows the smoke: {data}"


def test_cleared_heat_alarm_sends_a_restore_the_bridge_stores(virtual_sensors):
    board = virtual_sensors
    since = board.dut.mark()
    board.dut.cmd("sensor", t=90.0, tau=2.0)
    _sensor_alarm(board, "heat", since)
    board.dut.cmd("sensor", t=25.0, tau=1.0)
    restore = board.dut.expect("event", SENSOR_ALARM_S, since=since, type="restore")
    # the bridge must store it (ack `stored`), or it stays in the board's flash outbox for ever
    wait_ack(board, restore["id"], "stored", since)


def test_gps_sentences_move_the_alarm_location(virtual_sensors, intake, observer, results):
    board = virtual_sensors
    lat, lon = 21.0368, 105.8342  # a fix about 3 km from where the board was installed
    seen = observer.mark()
    reply = board.dut.cmd("nmea", line=gga(lat, lon))  # the simulated receiver repeats it every second
    assert reply.get("valid") is True, f"the board rejected a valid sentence: {reply}"
    # the board polls its GPS UART on its own schedule: wait until its telemetry shows the fix
    topic = protocol.topic(board.dev, "telemetry")
    observer.wait(lambda m: m[1] == topic and (json.loads(m[2]).get("r") or {}).get("gps"),
                  3 * board.cfg.get("telemetry_s", 60) + 10, since=seen)
    since = board.dut.mark()
    ev, pressed = press_alarm(board)
    accepted = follow_alarm(board, ev, pressed, since, results)
    loc = intake.incident(accepted["incident"])["location"]
    assert loc["source"] == "gps"
    assert abs(loc["lat"] - lat) < 1e-4 and abs(loc["lon"] - lon) < 1e-4


def test_real_bme680_readings_are_plausible(board, bench, observer):
    if bench.virtual or bench.emulated:
        pytest.skip("this board's BME680 reads what the suite injects; plausibility is for real sensors")
    if "bme680" not in (bench.board_entry.get("sensors") or []):
        pytest.skip(f"board {bench.board_entry['name']} has no BME680 fitted")
    topic = protocol.topic(board.dev, "telemetry")
    _, _, payload, _ = observer.wait(lambda m: m[1] == topic and b'"t":' in m[2], 3 * board.cfg.get("telemetry_s", 60) + 10)
    r = json.loads(payload)["r"]
    assert -10 <= r["t"] <= 50, f"air temperature {r['t']} degC"
    assert 0 <= r["rh"] <= 100, f"humidity {r['rh']} %RH"
    assert 80000 <= r["p"] <= 110000, f"pressure {r['p']} Pa"
    assert r["gas"] and r["gas"] > 0, f"gas resistance {r['gas']} ohm"

"""The smoke/heat sensor on a virtual board with a real broker (issue #4): detection raises its own
pre-alarms and alarms with the readings, GPS changes the location, an unplugged sensor is a fault."""

from __future__ import annotations

import json
import time

from integration.support import Observer, body_of, nmea

from firmware import protocol_host as protocol


def sensor_events(observer, dev):
    return [body_of(f) for f in observer.events(dev)]


def wait_event(observer, dev, pred, timeout=60):
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic(dev, "event") and pred(body_of(m[1])), timeout)
    return body_of(frame)


def test_heat_jump_raises_prealarm_then_alarm_with_readings(make_board, observer):
    vb = make_board("heat-0001", sample_s=1)
    vb.request("sensor", tau=10)
    vb.request("sensor", t=56)  # hot air: past the 52 °C static prealarm, not yet a fire
    pre = wait_event(observer, "heat-0001", lambda e: e["type"] == "prealarm")
    vb.request("sensor", t=95)  # then the fire takes hold
    alarm = wait_event(observer, "heat-0001", lambda e: e["type"] == "alarm")
    assert pre["cause"] in ("heat", "multi") and alarm["cause"] in ("heat", "multi")
    assert pre["ctr"] < alarm["ctr"]
    assert alarm["data"]["t"] > 40 and "hist" in alarm["data"]
    assert len(json.dumps(alarm["data"])) < 1500
    vb.console.wait_for(lambda m: m.get("ev") == "indicator" and m.get("state") == "alarm", 10)


def test_smoke_rise_raises_prealarm_then_alarm(make_board, observer):
    vb = make_board("smoke-0001", sample_s=1)
    vb.request("sensor", obs=0.5)  # well over the 0.05-0.3 dB/m band 1 threshold
    wait_event(observer, "smoke-0001", lambda e: e["type"] == "prealarm" and e["cause"] in ("smoke", "multi"))
    alarm = wait_event(observer, "smoke-0001", lambda e: e["type"] == "alarm")
    assert alarm["data"]["obs"] >= 0.3


def test_gps_fix_changes_location_of_next_alarm(make_board, broker, observer):
    window_s = 1
    vb = make_board("gps-0001", lat=21.0285, lon=105.8048, cancel_window_s=window_s, telemetry_s=1)
    telemetry = Observer(broker, topics=(protocol.every("telemetry"),))
    try:
        vb.request("press", ms=100)
        first = wait_event(observer, "gps-0001", lambda e: e["type"] == "alarm")
        # the console line left the board before the frame, but the two reach the test by different
        # paths (pty, broker): wait for it rather than assume it is read already
        alarm_line = vb.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm", 10)
        assert first["loc"]["src"] == "fixed"
        seen = telemetry.mark()
        hms = time.strftime("%H%M%S", time.gmtime())
        reply = vb.request("nmea", line=nmea(f"GPGGA,{hms}.00,1046.6133,N,10642.0484,E,1,09,0.9,12.0,M,2.0,M,,"))
        assert reply["valid"] is True, reply  # the firmware parsed the sentence as a fix
        # the board polls its GPS UART on its own schedule: its telemetry says when it has the fix
        telemetry.wait(lambda m: (json.loads(m[1]).get("r") or {}).get("gps"), 15, since=seen)
    finally:
        telemetry.close()
    # a deliberate gap: a press inside the alarm's cancel window would count towards cancelling it
    time.sleep(max(0.0, alarm_line.t + window_s + 0.5 - time.monotonic()))
    vb.request("press", ms=100)  # a new alarm
    second = wait_event(observer, "gps-0001", lambda e: e["ctr"] > first["ctr"] and e["loc"]["src"] == "gps", 30)
    assert abs(second["loc"]["lat"] - 10.776888) < 1e-4 and abs(second["loc"]["lon"] - 106.700807) < 1e-4
    assert second["loc"]["acc"] < 50


def test_unplugged_bme680_is_a_fault(make_board, observer):
    vb = make_board("unplug-0001", sample_s=1)
    vb.request("sensor", unplug=["bme680"])
    fault = wait_event(observer, "unplug-0001", lambda e: e["type"] == "fault")
    assert fault["cause"] in ("sensor", "i2c") and fault["data"].get("detail")
    # what the installer's verify reads: the sensor by name, with what is wrong with it
    assert vb.request("status")["sensors"]["bme680"] == fault["data"]["detail"]
    vb.request("sensor", plug=["bme680"])
    restore = wait_event(observer, "unplug-0001", lambda e: e["type"] == "restore")
    assert restore["cause"] == fault["cause"]
    assert vb.request("status")["sensors"]["bme680"] == "ok"

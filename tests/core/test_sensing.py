# The sensing task on the simulated sensors of the virtual board: events from the test rig's
# `sensor` and `nmea` commands, sensor / GPS / battery / tamper faults, readings, location, self-test.
import asyncio

import rig
from board.virtual_sensors import VirtualSensors
from drivers.gps import checksum
from sensing import Sensing

FIXED = {"lat": 21.028511, "lon": 105.804817, "acc": 15}


def nmea(body):
    return "$%s*%02X" % (body, checksum(body))


GGA = nmea("GNGGA,092750.000,1047.4520,N,10640.1234,E,1,9,0.9,12.0,M,0,M,,")


class Pin:
    def __init__(self, v=0):
        self.v = v

    def value(self):
        return self.v


class Adc:
    def __init__(self, v):
        self.v = v

    def read_u16(self):
        return self.v


class Board:
    def __init__(self, vs, sensors=("bme680", "smoke", "gps"), batt=None, tamper=None):
        self.vs = vs
        self.sensors = list(sensors)
        self._batt = batt
        self._tamper = tamper

    def rig_sensors(self):
        return self.vs

    def i2c(self):
        return self.vs.i2c()

    def smoke_adc(self):
        return self.vs.smoke_adc()

    def gps_uart(self):
        return self.vs.gps_uart()

    def battery_adc(self):
        return self._batt

    def tamper_pin(self):
        return self._tamper


class App:  # what the rig's commands use of the app
    def __init__(self, board, sensing):
        self.board = board
        self.sensing = sensing


class Rig:
    def __init__(self, cfg=None, **board_kw):
        self.now = [0]
        self.events = []
        self.vs = VirtualSensors(lag_tau_s=30, clock_ms=lambda: self.now[0])
        self.board = Board(self.vs, **board_kw)
        c = {"loc": FIXED, "sample_s": 2}
        c.update(cfg or {})
        self.s = Sensing(self.board, c, lambda typ, cause, data: self.events.append((typ, cause, data)),
                         lambda: self.now[0])
        self.cmds = {}
        rig.register(App(self.board, self.s), self)

    def register(self, name, handler):  # as the console does
        self.cmds[name] = handler

    async def steps(self, seconds, every_ms=2000):
        for _ in range(int(seconds * 1000 // every_ms)):
            self.now[0] += every_ms
            await self.s.step()

    def kinds(self):
        return [(e[0], e[1]) for e in self.events]


async def test_quiet_room_gives_readings_and_no_events():
    r = Rig()
    await r.steps(60)
    assert r.events == []
    v = r.s.readings()
    assert abs(v["t"] - 25.0) < 0.05 and abs(v["rh"] - 50.0) < 0.1 and abs(v["obs"]) < 0.002
    assert abs(v["p"] - 101325) < 20 and v["gas"] > 100000 and v["gps"] is None
    assert r.s.location(r.now[0])["src"] == "fixed"


async def test_hot_air_raises_heat_prealarm_then_alarm():
    r = Rig()
    await r.steps(60)
    assert r.cmds["sensor"]({"cmd": "sensor", "t": 90})["ok"]
    await r.steps(180)
    kinds = r.kinds()
    assert ("alarm", "heat") in kinds
    alarm = [e for e in r.events if e[0] == "alarm"][0]
    assert alarm[2]["t"] > 30 and len(alarm[2]["hist"]) >= 5


async def test_smoke_alarm_and_restore():
    r = Rig()
    await r.steps(60)
    r.cmds["sensor"]({"obs": 0.3})
    await r.steps(30)
    assert r.kinds() == [("prealarm", "smoke"), ("alarm", "smoke")]
    r.cmds["sensor"]({"obs": 0.0})
    await r.steps(10)
    assert r.kinds()[-1] == ("restore", "smoke")


async def test_unplugged_bme680_is_an_i2c_fault_after_retries_then_restores():
    r = Rig(cfg={"i2c_retries": 3})
    await r.steps(10)
    r.cmds["sensor"]({"unplug": ["bme680"]})
    await r.steps(4)
    assert r.events == []  # two failed reads: still retrying
    await r.steps(2)
    assert r.kinds() == [("fault", "i2c")]
    assert r.s.readings()["t"] is None
    r.cmds["sensor"]({"plug": ["bme680"]})
    await r.steps(2)
    assert r.kinds()[-1] == ("restore", "i2c")


async def test_wrong_chip_is_a_sensor_fault():
    r = Rig(cfg={"i2c_retries": 1})
    r.vs.bme.regs[0xD0] = 0x58
    await r.steps(2)
    assert r.kinds() == [("fault", "sensor")] and "chip id" in r.events[0][2]["detail"]


async def test_stuck_sensor_is_a_fault():
    r = Rig(cfg={"stuck_s": 60})
    await r.steps(10)
    r.cmds["sensor"]({"stuck": True})
    await r.steps(70)
    assert r.kinds() == [("fault", "sensor")] and "unchanged" in r.events[0][2]["detail"]
    r.cmds["sensor"]({"stuck": False})
    await r.steps(4)
    assert r.kinds()[-1] == ("restore", "sensor")


async def test_gps_fix_wins_and_silence_is_a_fault():
    r = Rig(cfg={"gps_silent_s": 10})
    await r.steps(4)
    reply = r.cmds["nmea"]({"line": GGA})
    assert reply == {"ok": True, "valid": True}
    await r.steps(4)
    loc = r.s.location(r.now[0])
    assert loc["src"] == "gps" and loc["acc"] == 5 and abs(loc["lat"] - 10.7908667) < 1e-6
    assert r.s.readings()["gps"]["acc"] == 5
    r.cmds["sensor"]({"unplug": ["gps"]})
    await r.steps(40)
    assert r.s.location(r.now[0])["src"] == "fixed"
    assert r.kinds() == [("fault", "gps")]
    r.cmds["sensor"]({"plug": ["gps"]})
    await r.steps(4)
    assert r.kinds() == [("fault", "gps"), ("restore", "gps")]
    assert r.s.location(r.now[0])["src"] == "gps"


async def test_bad_nmea_line_is_reported_invalid():
    r = Rig()
    assert r.cmds["nmea"]({"line": "$GPGGA,1,2*00"}) == {"ok": True, "valid": False}
    assert r.cmds["nmea"]({})["ok"] is False


async def test_battery_low_and_tamper():
    batt = Adc(int(3.3 / 2 / 3.3 * 65535))  # 3.3 V through a 1:2 divider
    pin = Pin(0)
    r = Rig(cfg={"battery": {"divider": 2.0, "low_v": 3.4, "empty_v": 3.3}}, batt=batt, tamper=pin)
    await r.steps(4)
    assert r.kinds() == [("fault", "battery")]
    batt.v = int(3.9 / 2 / 3.3 * 65535)
    pin.v = 1
    await r.steps(2)
    assert r.kinds()[1:] == [("restore", "battery"), ("fault", "tamper")]
    b = r.s.battery()
    assert abs(b["v"] - 3.9) < 0.01 and 55 <= b["pct"] <= 70


async def test_selftest_checks_heater_and_chamber():
    r = Rig(sensors=("bme680", "smoke"))
    await r.steps(4)
    res = await r.s.selftest()
    assert res["ok"] and res["heater"] == "ok" and res["chamber"] == "ok" and res["gps"] == "absent"
    r.cmds["sensor"]({"unplug": ["heater", "smoke"]})
    res = await r.s.selftest()
    assert not res["ok"] and res["heater"] == "fail" and res["chamber"] == "fail"


async def test_sensor_command_rejects_unknown_fields():
    r = Rig()
    reply = r.cmds["sensor"]({"cmd": "sensor", "tag": 4, "colour": "red"})
    assert reply["ok"] is False and "colour" in reply["error"]
    reply = r.cmds["sensor"]({"unplug": ["flux"]})
    assert reply["ok"] is False


async def test_bad_detector_settings_are_a_config_fault():
    r = Rig(cfg={"detect": {"smoke": {"threshold": 0.5}}})
    assert r.kinds() == [("fault", "config")]
    assert r.s.multi.smoke.s["threshold"] == 0.15


async def test_run_loop_samples_on_its_own():
    r = Rig(cfg={"sample_s": 0.05})
    r.s.clock_ms = _real_ms
    r.s._last = _real_ms()
    try:
        await asyncio.wait_for(r.s.run(), 0.4)
    except asyncio.TimeoutError:
        pass
    assert r.s.readings()["t"] is not None and r.s.elapsed_ms >= 300


async def test_run_loop_rides_out_a_full_heap():
    r = Rig(cfg={"sample_s": 0.05})
    r.s.clock_ms = _real_ms
    r.s._last = _real_ms()
    real_step = r.s.step
    full = [True]

    async def step():
        if full[0]:  # the first sample finds the heap full
            full[0] = False
            raise MemoryError("memory allocation failed")
        await real_step()

    r.s.step = step
    try:
        await asyncio.wait_for(r.s.run(), 1.5)
    except asyncio.TimeoutError:
        pass
    assert r.s.lowmem == 1 and r.s.readings()["t"] is not None  # one sample lost, then sampling again


def _real_ms():
    import time

    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)

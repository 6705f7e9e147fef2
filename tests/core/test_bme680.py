# BME680 driver: Bosch integer compensation at the datasheet reference point, and the driver over a
# simulated chip at the I2C register level (the one the virtual board uses).
from board.virtual_sensors import REF_CAL, VirtualSensors, adc_for, encode_calibration
from drivers import bme680 as chip
from util import raises


def _clock():
    now = [0]
    return now, lambda: now[0]


def _read(b):
    b.start()
    return b.result()


def test_reference_point_exact():
    tf = chip.calc_t_fine(REF_CAL, 501240)
    assert chip.calc_temperature(tf) == 2669  # 26.69 degC
    assert chip.calc_pressure(REF_CAL, tf, 353485) == 98712  # Pa
    assert chip.calc_humidity(REF_CAL, tf, 19019) == 42402  # 42.402 %RH
    assert chip.calc_gas(REF_CAL, 0, 0) == 12946860  # Ohm


def test_calibration_registers_round_trip():
    regs = bytearray(256)
    encode_calibration(REF_CAL, regs)
    cal = chip.parse_calibration(regs[0x89:0x89 + 25], regs[0xE1:0xE1 + 16], regs[0:5])
    for k in REF_CAL:
        assert cal[k] == REF_CAL[k], k


def test_humidity_is_clamped_to_0_100():
    tf = chip.calc_t_fine(REF_CAL, 501240)
    assert chip.calc_humidity(REF_CAL, tf, 65535) == 100000
    assert chip.calc_humidity(REF_CAL, tf, 0) == 0


def test_heater_codes():
    # gas_wait: 6-bit value with a x1/x4/x16/x64 multiplier; 150 ms = 37 x 4 (+ code 0x40)
    assert chip.calc_gas_wait(150) == 0x40 + 37
    assert chip.calc_gas_wait(63) == 63
    assert chip.calc_gas_wait(5000) == 0xFF
    hot = chip.calc_res_heat(REF_CAL, 320)
    assert 0 < chip.calc_res_heat(REF_CAL, 200) < hot < chip.calc_res_heat(REF_CAL, 400)
    assert chip.calc_res_heat(REF_CAL, 500) == chip.calc_res_heat(REF_CAL, 400)  # capped


def test_adc_inversion_reproduces_values():
    t_adc, p_adc, h_adc, g_adc, g_rng = adc_for(REF_CAL, 31.25, 55.5, 100500, 80000)
    tf = chip.calc_t_fine(REF_CAL, t_adc)
    assert chip.calc_temperature(tf) == 3125
    assert abs(chip.calc_pressure(REF_CAL, tf, p_adc) - 100500) <= 1
    assert abs(chip.calc_humidity(REF_CAL, tf, h_adc) - 55500) <= 10
    assert abs(chip.calc_gas(REF_CAL, g_adc, g_rng) - 80000) / 80000 < 0.01


def test_driver_reads_simulated_chip():
    now, clock = _clock()
    vs = VirtualSensors(clock_ms=clock, t=21.5, rh=64.0, p=99800, gas=150000)
    b = chip.BME680(vs.i2c(), sleep_ms=lambda ms: None)
    r = _read(b)
    assert abs(r["t"] - 21.5) < 0.02
    assert abs(r["rh"] - 64.0) < 0.05
    assert abs(r["p"] - 99800) < 20
    assert abs(r["gas"] - 150000) / 150000 < 0.01
    assert r["heat_stab"]


def test_driver_programs_heater_and_oversampling():
    now, clock = _clock()
    vs = VirtualSensors(clock_ms=clock)
    b = chip.BME680(vs.i2c(), osrs_t=2, osrs_p=16, osrs_h=1, iir=7, heater_c=300, heater_ms=100,
                    sleep_ms=lambda ms: None)
    regs = vs.bme.regs
    assert regs[chip.REG_CTRL_HUM] & 0x07 == 1
    assert regs[chip.REG_CTRL_MEAS] >> 5 == 2 and (regs[chip.REG_CTRL_MEAS] >> 2) & 0x07 == 5
    assert (regs[chip.REG_CONFIG] >> 2) & 0x07 == 3
    assert regs[chip.REG_RES_HEAT0] == chip.calc_res_heat(REF_CAL, 300)
    assert regs[chip.REG_GAS_WAIT0] == chip.calc_gas_wait(100)
    assert regs[chip.REG_CTRL_GAS1] & chip.RUN_GAS
    b.set_heater(None, 0)
    assert _read(b)["gas"] is None  # heater off: no gas reading


def test_sensor_lags_the_air():
    now, clock = _clock()
    vs = VirtualSensors(lag_tau_s=30, clock_ms=clock, t=25.0)
    b = chip.BME680(vs.i2c(), sleep_ms=lambda ms: None)
    vs.set(t=85.0)
    now[0] = 30000  # one time constant: 63 % of the step
    t = _read(b)["t"]
    assert 61.0 < t < 64.0, t
    now[0] = 300000
    assert abs(_read(b)["t"] - 85.0) < 0.05


def test_missing_or_wrong_chip():
    now, clock = _clock()
    vs = VirtualSensors(clock_ms=clock)
    vs.set(unplug=["bme680"])
    assert raises(OSError, chip.BME680, vs.i2c(), sleep_ms=lambda ms: None)
    vs.set(plug=["bme680"])
    vs.bme.regs[chip.REG_CHIP_ID] = 0x60  # a BMP280 answers at the address
    assert raises(chip.ChipIdError, chip.BME680, vs.i2c(), sleep_ms=lambda ms: None)


def test_no_new_data_reads_as_none():
    now, clock = _clock()
    vs = VirtualSensors(clock_ms=clock)
    b = chip.BME680(vs.i2c(), sleep_ms=lambda ms: None)
    assert b.result() is None  # nothing measured since the soft reset

# The ESP32 board: pins from /board.json (derived from boards.yaml), Wi-Fi with reconnect, the
# hardware watchdog, and the serial console on the USB-UART.
import asyncio
import sys
import time

import esp32
import machine
import network

_PULL = {"up": machine.Pin.PULL_UP, "down": machine.Pin.PULL_DOWN, "none": None}
_ATTEN = {"0db": machine.ADC.ATTN_0DB, "2_5db": machine.ADC.ATTN_2_5DB, "6db": machine.ADC.ATTN_6DB,
          "11db": machine.ADC.ATTN_11DB}
_EPOCH_2000 = 946684800  # the port's time.time() counts from 2000-01-01; Unix time from 1970
_FLOOR_MARK = b"clock:floor"  # in RTC memory: the clock reads the floor, not a synced time
NEOPIXEL_ON = (64, 0, 0)  # red at a quarter: bright enough to see, gentle on a battery
_RESET = {
    machine.PWRON_RESET: "power",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "wdt",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}


class Board:
    name = "esp32"
    chip = "esp32"
    rig_always = False  # the rig is on only when the device was provisioned with it

    def __init__(self):
        # MicroPython's ESP32 bootloader rolls back an OTA image that never says it is good.
        try:
            esp32.Partition.mark_app_valid_cancel_rollback()
        except Exception:
            pass
        self.reset_cause = _RESET.get(machine.reset_cause(), "unknown")
        self.sensors = []
        self.pins = {}
        self.panel = None
        self._ack = None
        self._button = None
        self._button_active_low = True
        self._led = None
        self._pixel = None
        self._buzzer = None
        self._wdt = None
        self._wlan = network.WLAN(network.STA_IF)
        self._i2c = None
        self._sim = None  # the rig's simulated sensors, where the device was provisioned with them
        self._rig_down = False  # the rig's software press, OR'ed with the real button
        self._rig_net_down = False

    def setup(self, board_cfg, device_cfg):
        self.name = board_cfg.get("name", "esp32")
        self.chip = board_cfg.get("chip", "esp32")
        self.sensors = board_cfg.get("sensors", [])
        self.pins = p = board_cfg.get("pins", {})
        self.panel = board_cfg.get("panel")
        if self.sensors and device_cfg.get("test_rig") and device_cfg.get("rig_sensors") == "simulated":
            # A board whose sensors cannot be read (the emulated ESP32 has no ADC, BME680 or GPS):
            # the rig's simulated ones stand in for the buses, and the console drives them.
            from board.virtual_sensors import VirtualSensors

            self._sim = VirtualSensors(**(device_cfg.get("virtual_sensors") or {}))
        b = p.get("button")
        if b:
            pull = b.get("pull", "up")
            if pull not in _PULL:
                raise ValueError("board.json: button pull must be up, down or none, not %r" % pull)
            # pull none: an external resistor sets the idle level, and a pull-down would fight it
            self._button = machine.Pin(b["pin"], machine.Pin.IN, _PULL[pull])  # type: ignore[arg-type]  # None: no pull, as MicroPython documents
            self._button_active_low = b.get("active", "low") == "low"
        led = p.get("led")
        if led and led.get("kind") == "neopixel":  # the C3/S3 boards' RGB LED: a WS2812, not a plain pin
            import neopixel

            self._pixel = neopixel.NeoPixel(machine.Pin(led["pin"], machine.Pin.OUT), 1)
        elif led:
            self._led = (machine.Pin(led["pin"], machine.Pin.OUT), led.get("active", "high") == "high")
        if p.get("buzzer"):
            self._buzzer = (machine.Pin(p["buzzer"]["pin"], machine.Pin.OUT), p["buzzer"].get("active", "high") == "high")
        if p.get("ack_output"):
            self._ack = (machine.Pin(p["ack_output"]["pin"], machine.Pin.OUT), p["ack_output"].get("active", "high") == "high")
        self.led(False)
        self.buzzer(False)
        self.ack_output(False)

    # -- console --------------------------------------------------------------------------
    def console_reader(self):
        return asyncio.StreamReader(sys.stdin)

    def console_write(self, text):
        sys.stdout.write(text)

    # -- button, indicator --------------------------------------------------------------------
    def button_pressed(self):
        if self._rig_down:
            return True
        if self._button is None:
            return False
        v = self._button.value()
        return (v == 0) if self._button_active_low else (v == 1)

    def _out(self, pair, on):
        if pair:
            pair[0].value(1 if on == pair[1] else 0)

    def led(self, on):
        if self._pixel is not None:
            self._pixel[0] = NEOPIXEL_ON if on else (0, 0, 0)
            self._pixel.write()
        else:
            self._out(self._led, on)

    def buzzer(self, on):
        self._out(self._buzzer, on)

    def ack_output(self, on):
        self._out(self._ack, on)

    # -- sensors ------------------------------------------------------------------------------
    def i2c(self):
        if self._sim:
            return self._sim.i2c()
        c = self.pins.get("i2c")
        if not c:
            return None
        if self._i2c is None:
            self._i2c = machine.I2C(c.get("id", 0), scl=machine.Pin(c["scl"]), sda=machine.Pin(c["sda"]), freq=c.get("freq", 400000))
        return self._i2c

    def gps_uart(self):
        if self._sim:
            return self._sim.gps_uart()
        c = self.pins.get("gps_uart")
        if not c:
            return None
        return machine.UART(c["id"], baudrate=c.get("baud", 9600), tx=c["tx"], rx=c["rx"], timeout=0, rxbuf=1024)

    def _adc(self, key):
        c = self.pins.get(key)
        return self._adc_of(c, key) if c else None

    def _adc_of(self, c, key):
        atten = c.get("atten", "11db")
        if atten not in _ATTEN:  # a wrong range would misread every sample: refuse, as a sensor fault
            raise ValueError("board.json: %s atten must be one of %s, not %r" % (key, ",".join(_ATTEN), atten))
        adc = machine.ADC(machine.Pin(c["pin"]))
        adc.atten(_ATTEN[atten])
        return adc

    def smoke_adc(self):
        if self._sim:
            return self._sim.smoke_adc()
        return self._adc("smoke_adc")

    def battery_adc(self):
        return self._adc("battery_adc")

    def panel_adc(self, name):
        """A panel input's ADC (read_uv: calibrated by the chip's eFuse reference), or None."""
        for c in (self.panel or {}).get("inputs", ()):
            if c["name"] == name:
                return self._adc_of(c, "panel input " + name)
        return None

    def tamper_pin(self):
        c = self.pins.get("tamper")
        return machine.Pin(c["pin"], machine.Pin.IN, machine.Pin.PULL_UP) if c else None

    # -- network ------------------------------------------------------------------------------
    def isconnected(self):
        return not self._rig_net_down and self._wlan.isconnected()

    async def connect_network(self, wifi_cfg):
        """Bring Wi-Fi up (and keep trying); the MQTT client waits for isconnected(). Never raises:
        on the chip, connect() while a connection is in progress raises OSError (Wi-Fi internal
        error), and so can active() when the radio is busy."""
        if not wifi_cfg or self._rig_net_down:
            return False
        w = self._wlan
        try:
            w.active(True)
            if not w.isconnected() and w.status() != network.STAT_CONNECTING:
                w.connect(wifi_cfg["ssid"], wifi_cfg.get("password", ""))
        except OSError:
            pass  # already connecting, or the radio is not ready: wait, and try again next round
        for _ in range(200):
            if w.isconnected():
                return True
            await asyncio.sleep_ms(100)
        return False

    def restart_network(self):
        """Leave the access point; connect_network() joins again on its next round. The radio stays
        active: active(False) would give its driver's memory back, and the MicroPython heap, which
        grows into the system heap, may have taken it by the time the radio asks again."""
        try:
            self._wlan.disconnect()
        except OSError:
            pass  # not connected

    def rssi(self):
        try:
            return self._wlan.status("rssi")
        except Exception:
            return None

    def raise_clock(self, floor):
        """After power-up the RTC counts from 2000, and mbedTLS then refuses every certificate
        ("validity starts in the future"): with no NTP the device could never reach a TLS broker.
        Set it to `floor` (when the record was made), marked in RTC memory (kept across resets,
        cleared by a power cut) as not synced, so events still carry no time until NTP sets it."""
        try:
            if not floor or time.time() + _EPOCH_2000 >= floor:
                return False
            t = time.gmtime(floor - _EPOCH_2000)
            rtc = machine.RTC()
            rtc.datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))
            rtc.memory(_FLOOR_MARK)
            return True
        except Exception:
            return False

    def wall_clock_synced(self):
        # The RTC keeps the time across a soft reset and deep sleep; after power-up it counts from
        # 2000, so a year before the firmware was written means nobody has set it, and the floor's
        # mark means only raise_clock() did.
        try:
            return time.gmtime()[0] >= 2025 and machine.RTC().memory() != _FLOOR_MARK
        except Exception:
            return False

    def sync_time(self, server):
        if server is False:
            return False  # NTP off (a closed network, as on the emulated board)
        try:
            import ntptime

            if server:
                ntptime.host = server
            ntptime.settime()
            machine.RTC().memory(b"")  # set by NTP now, not by the floor
            return self.wall_clock_synced()
        except Exception:
            return False

    def system_heap(self):
        """ESP-IDF's data heap: MicroPython's heap grows into it and never gives it back, and a TLS
        session needs tens of KB of it at once."""
        try:
            regions = esp32.idf_heap_info(esp32.HEAP_DATA)
            return sum(r[1] for r in regions), max(r[2] for r in regions)
        except Exception:
            return None

    # -- watchdog, reset ----------------------------------------------------------------------
    def wdt_start(self, timeout_ms):
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt:
            self._wdt.feed()

    def reboot(self):
        machine.reset()

    # -- test rig -------------------------------------------------------------------------------
    def rig_button(self, down):
        self._rig_down = bool(down)

    def rig_network(self, up):
        self._rig_net_down = not up
        if not up:
            try:
                self._wlan.disconnect()
            except OSError:
                pass

    def rig_sensors(self):
        return self._sim  # None: the sensors are real

    def rig_panel(self, name, ohms):
        return False  # the panel inputs are real: the rig cannot set them

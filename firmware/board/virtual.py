# The virtual board: MicroPython's unix port on a computer. The console is the process's stdin and
# stdout, which the launcher (provisioning/vboard.py) relays to a pseudo-terminal; the button, the
# network and the sensors are driven through console commands; the watchdog is a FIFO the launcher
# watches, so a hung firmware is killed and restarted from outside, as a hardware watchdog would.
import asyncio
import os
import sys

from micropython import const

_REBOOT_EXIT = const(75)  # the launcher restarts the firmware on the same flash when it exits with this


class Board:
    name = "virtual"
    chip = "virtual"
    rig_always = True  # its button, network and sensors exist only through the rig

    def __init__(self):
        self.sensors = []
        self.pins = {}
        self.panel = None
        self.ack = False  # the acknowledgement output
        self.net_up = True
        self.led_on = False
        self.buzzer_on = False
        self.reset_cause = os.getenv("BAOCHAY_RESET_CAUSE") or "power"
        self._button = False
        self._wdt = None
        self._vs = None
        self._restarting = False

    def setup(self, board_cfg, device_cfg):
        self.name = board_cfg.get("name", "virtual")  # the boards.yaml entry (an update checks it)
        self.sensors = board_cfg.get("sensors", [])
        self.pins = board_cfg.get("pins", {})
        self.panel = board_cfg.get("panel")
        if self.panel:
            from board import virtual_panel

            virtual_panel.setup(self.panel)
        if self.sensors:
            try:
                from board.virtual_sensors import VirtualSensors
            except ImportError:
                self._vs = None
            else:
                sim = dict(device_cfg.get("virtual_sensors") or {})
                cal = device_cfg.get("smoke_cal")
                if isinstance(cal, dict) and "smoke_cal" not in sim:
                    sim["smoke_cal"] = cal  # the simulated chamber answers in this device's calibration
                self._vs = VirtualSensors(**sim)

    # -- console --------------------------------------------------------------------------
    def console_reader(self):
        return asyncio.StreamReader(sys.stdin)

    def console_write(self, text):
        sys.stdout.write(text)

    # -- button, indicator ------------------------------------------------------------------
    def button_pressed(self):
        return self._button

    def rig_button(self, down):
        self._button = bool(down)

    def led(self, on):
        self.led_on = on

    def buzzer(self, on):
        self.buzzer_on = on

    def ack_output(self, on):
        self.ack = on

    # -- sensors (simulated) ----------------------------------------------------------------
    def rig_sensors(self):
        return self._vs

    def i2c(self):
        return self._vs.i2c() if self._vs and hasattr(self._vs, "i2c") else None

    def gps_uart(self):
        return self._vs.gps_uart() if self._vs and hasattr(self._vs, "gps_uart") else None

    def smoke_adc(self):
        return self._vs.smoke_adc() if self._vs and hasattr(self._vs, "smoke_adc") else None

    # -- panel inputs (simulated in board/virtual_panel.py, loaded only where the board has some) --
    def panel_adc(self, name):
        if not self.panel:
            return None
        from board import virtual_panel

        return virtual_panel.get(name)

    def rig_panel(self, name, ohms):
        from board import virtual_panel

        virtual_panel.set(name, ohms)
        return True

    def battery_adc(self):
        return None

    def tamper_pin(self):
        return None

    # -- network ------------------------------------------------------------------------------
    def isconnected(self):
        return self.net_up and not self._restarting

    def restart_network(self):
        self._restarting = True  # down, as an interface restart is, until the next connect_network()

    def rig_network(self, up):
        self.net_up = bool(up)

    async def connect_network(self, wifi_cfg):
        self._restarting = False
        return self.net_up

    def rssi(self):
        return None

    def system_heap(self):
        return None  # the host's memory is not the device's

    def raise_clock(self, floor):
        return False  # the host's clock is set, and not ours to move

    def wall_clock_synced(self):
        return True  # the host keeps its clock by NTP

    def sync_time(self, server):
        return True

    # -- watchdog, reset ----------------------------------------------------------------------
    def wdt_start(self, timeout_ms):
        path = os.getenv("BAOCHAY_WDT_FIFO")
        if path:
            try:
                self._wdt = open(path, "wb")
                self._wdt.write(b"S%d\n" % timeout_ms)
            except OSError:
                self._wdt = None

    def wdt_feed(self):
        if self._wdt:
            try:
                self._wdt.write(b".")
            except OSError:
                pass

    def reboot(self):
        sys.exit(_REBOOT_EXIT)


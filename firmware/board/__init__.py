# The board layer: everything hardware-specific stays behind this contract, declared here once.
# Two implementations: board.esp32 (real hardware, and the emulated ESP32) and board.virtual (the
# MicroPython unix port, where all simulation lives). The core calls nothing else on a board.
# board/contract.py lists the names, for tests/core/test_board_contract.py (and never loads on a device).
#
# Attributes
#   name, chip        the boards.yaml entry and its chip, once setup() has run
#   sensors           the sensors fitted ("bme680", "smoke", "gps"), from boards.yaml
#   pins              the pin map, from boards.yaml
#   panel             the panel inputs and their resistor network, from boards.yaml, or None
#   reset_cause       "power", "hard", "wdt", "deepsleep", "soft" or "unknown"
#   rig_always        True where the inputs exist only through the test rig (the virtual board):
#                     its rig commands are on whatever the device config says
# Start-up
#   setup(board_cfg, device_cfg)   configure the pins, buses and simulation from the two configs
# Console (the serial port the HIL suite and the installer's verify talk to)
#   console_reader()   an asyncio stream of input lines;  console_write(text)  one whole line out
# Inputs and outputs
#   button_pressed()   raw level of the call point (debounced by the core);  led(on), buzzer(on)
#   i2c(), gps_uart(), smoke_adc(), battery_adc(), tamper_pin()   the bus or pin, or None when
#                      the board has none; readers raise OSError when the hardware fails
#   panel_adc(name)    the ADC of one panel input (read_uv() -> microvolts on the pin), or None
#   ack_output(on)     drive the acknowledgement output ("transmitted"); a no-op without one
# Network and time
#   isconnected();  async connect_network(wifi_cfg) -> bool, never raises;  rssi() -> dBm or None
#   restart_network()  leave the network, never raises; the next connect_network() joins again
#   raise_clock(floor) -> bool  set the clock to `floor` (Unix seconds) if it reads earlier, never
#                      raises; the clock is not synced by it (events carry no time until NTP)
#   wall_clock_synced() -> bool;  sync_time(server) -> bool, never raises
# Memory
#   system_heap() -> (free, largest free block) in bytes of the heap outside MicroPython's (Wi-Fi,
#                      lwIP, TLS sessions), or None where there is none to report
# Watchdog and reset
#   wdt_start(timeout_ms), wdt_feed(), reboot() (a hard reset; never returns)
# Test rig (called only by rig.py, which is registered only when the rig is enabled)
#   rig_button(down)   press or release in software, as well as the real input
#   rig_network(up)    hold the network down (False) until released (True)
#   rig_sensors()      the simulated sensors the rig injects readings into, or None where the
#                      sensors are real (an ESP32 uses simulated ones only when provisioned with
#                      test_rig and rig_sensors: "simulated", as the emulated ESP32 is)
#   rig_panel(name, ohms)  put `ohms` (None: cut) on a simulated panel input's line; False where
#                      the inputs are real; ValueError for an input the board does not have
import sys


def create():
    if sys.platform == "esp32":
        from board.esp32 import Board
    else:
        from board.virtual import Board
    return Board()

# The names of the board contract declared and documented in board/__init__.py, for the test that
# checks both boards against it. Not imported by the firmware: a tuple of names costs heap.
ATTRIBUTES = ("name", "chip", "sensors", "pins", "panel", "reset_cause", "rig_always")
METHODS = ("setup", "console_reader", "console_write", "button_pressed", "led", "buzzer", "i2c",
           "gps_uart", "smoke_adc", "battery_adc", "tamper_pin", "panel_adc", "ack_output", "isconnected",
           "connect_network", "restart_network", "rssi", "raise_clock", "wall_clock_synced", "sync_time", "system_heap",
           "wdt_start", "wdt_feed", "reboot", "rig_button", "rig_network", "rig_sensors", "rig_panel")

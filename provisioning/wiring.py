"""Wiring tables for installers, made from boards.yaml (so the guide can never disagree with the pins)."""

from __future__ import annotations

from .boards import Board


def wiring_rows(board: Board) -> list[tuple[str, str, str]]:
    """(what, board pin, how) for every fitted part."""
    p = board.pins
    rows = []
    if "button" in p:
        b = p["button"]
        pull = "internal pull-up" if b.get("pull") == "up" else f"pull {b.get('pull')}"
        rows.append(("call-point button", f"GPIO{b['pin']}", f"other contact to GND ({pull}, active {b['active']})"))
    if "led" in p:
        led = p["led"]
        how = "on-board RGB LED, nothing to wire" if led.get("kind") == "neopixel" else \
            "LED anode through 330 Ω, cathode to GND"
        rows.append(("LED", f"GPIO{led['pin']}", how))
    if "buzzer" in p:
        rows.append(("buzzer (active, 3.3 V)", f"GPIO{p['buzzer']['pin']}",
                     "buzzer + (through an NPN transistor above 20 mA), buzzer - to GND"))
    if "i2c" in p:
        i2c = p["i2c"]
        rows.append(("BME680 SDA", f"GPIO{i2c['sda']}", f"I2C bus {i2c['id']}, {i2c['freq'] // 1000} kHz"))
        rows.append(("BME680 SCL", f"GPIO{i2c['scl']}", "BME680 VCC to 3V3, GND to GND"))
    if "gps_uart" in p:
        u = p["gps_uart"]
        rows.append(("GPS TX", f"GPIO{u['rx']}", f"board RX (UART {u['id']}, {u['baud']} baud)"))
        rows.append(("GPS RX", f"GPIO{u['tx']}", "board TX; GPS VCC per module (3V3 or 5V), GND to GND"))
    if "smoke_adc" in p:
        rows.append(("smoke chamber output", f"GPIO{p['smoke_adc']['pin']}",
                     f"0-3.3 V analogue (ADC1, attenuation {p['smoke_adc']['atten']})"))
    if "battery_adc" in p:
        bat = p["battery_adc"]
        rows.append(("battery sense", f"GPIO{bat['pin']}",
                     f"cell + through a 1:{bat['divider']:g} divider (100 kΩ / 100 kΩ to GND); "
                     f"full {bat['full_v']} V, empty {bat['empty_v']} V"))
    if "ack_output" in p:
        rows.append(("acknowledgement output", f"GPIO{p['ack_output']['pin']}",
                     f"relay driver or open-collector transistor (active {p['ack_output']['active']}): "
                     f"on while the panel alarm is accepted by 114"))
    if board.panel and not board.is_virtual:  # a virtual board's lines are driven over the console
        n = board.panel
        for i in n["inputs"]:
            what = "fire relay" if i["role"] == "fire" else "fault relay"
            rows.append((f"panel input `{i['name']}` ({what})", f"GPIO{i['pin']}",
                         f"3V3 through {_ohms(n['r_pull'])} to the pin; the line to the panel's contact, "
                         f"{_ohms(n['r_eol'])} across the line at the far end, {_ohms(n['r_alarm'])} in series "
                         f"with the contact (ADC1, attenuation {i['atten']})"))
    return rows


def _ohms(r: float) -> str:
    return f"{r / 1000:g} kΩ" if r >= 1000 else f"{r:g} Ω"


def wiring_markdown(board: Board) -> str:
    rows = wiring_rows(board)
    if not rows:
        return "Nothing to wire: sensors and the button are driven through the console.\n"
    out = ["| part | board pin | how |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out) + "\n"

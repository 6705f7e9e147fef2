"""boards.yaml: load, validate (errors name the board and the key) and derive /board.json.

A small validator of our own: the schema is short, and its most useful checks (pin conflicts, ADC1-only
pins, a filesystem that ends at the end of flash) are beyond what a JSON schema would say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from firmware.panel import STATES, nominal, thresholds

from .errors import ProvisionError

ROOT = Path(__file__).resolve().parent.parent
BOARDS_YAML = ROOT / "boards.yaml"

CHIPS = ("esp32", "esp32c3", "esp32s3", "virtual")
# The name esptool reports for each chip (ESPLoader.CHIP_NAME).
ESPTOOL_CHIP_NAMES = {"esp32": "ESP32", "esp32c3": "ESP32-C3", "esp32s3": "ESP32-S3"}
FLASH_SIZES = {"2MB": 2, "4MB": 4, "8MB": 8, "16MB": 16, "32MB": 32}
POWER = ("mains", "battery")
SUPERVISION = ("mains", "battery")
USB = ("uart", "native", "pty")
SENSORS = {"bme680": "i2c", "gps": "gps_uart", "smoke": "smoke_adc"}  # sensor -> the pin entry it needs
FS_KEYS = ("offset", "size", "block_size", "read_size", "prog_size", "lookahead")
REQUIRED = ("chip", "flash_size", "firmware_offset", "filesystem", "usb", "power", "supervision", "pins",
            "sensors")
OPTIONAL = ("description", "panel")

# Which GPIOs exist, which can drive an output, which are on ADC1 (ADC2 is unusable with Wi-Fi on).
_ESP32_GPIO = set(range(0, 40)) - {20, 24, 28, 29, 30, 31} - set(range(6, 12))  # 6-11: SPI flash
GPIO = {
    "esp32": _ESP32_GPIO,
    "esp32c3": set(range(0, 22)) - set(range(12, 18)),  # 12-17: SPI flash
    "esp32s3": (set(range(0, 22)) | set(range(33, 49))),  # 26-32: SPI flash/PSRAM
}
INPUT_ONLY = {"esp32": set(range(34, 40)), "esp32c3": set(), "esp32s3": set()}
ADC1 = {"esp32": set(range(32, 40)), "esp32c3": set(range(0, 5)), "esp32s3": set(range(1, 11))}
ATTEN = ("0db", "2_5db", "6db", "11db")

# pin entry -> (required keys, which of them are GPIO numbers, which of those drive an output)
PIN_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "button": (("pin", "pull", "active"), ("pin",), ()),
    "led": (("pin", "active"), ("pin",), ("pin",)),
    "buzzer": (("pin", "active"), ("pin",), ("pin",)),
    "i2c": (("id", "scl", "sda", "freq"), ("scl", "sda"), ("scl", "sda")),
    "gps_uart": (("id", "tx", "rx", "baud"), ("tx", "rx"), ("tx",)),
    "smoke_adc": (("pin", "atten"), ("pin",), ()),
    "battery_adc": (("pin", "atten", "divider", "full_v", "empty_v"), ("pin",), ()),
    "ack_output": (("pin", "active"), ("pin",), ("pin",)),
}
ADC_ENTRIES = ("smoke_adc", "battery_adc")

# Panel inputs (docs/transmitter.md): the resistor network and the inputs on it.
PANEL_KEYS = ("supply_v", "r_pull", "r_eol", "r_alarm", "inputs")
PANEL_INPUT_KEYS = ("name", "role", "pin", "atten", "zone")
PANEL_ROLES = ("fire", "fault")
PANEL_MAX_INPUTS = 8
SUPPLY_V = (1.8, 3.6)  # an ESP32 pin takes no more than its own supply
OHMS = (100, 1000000)
# What the ESP32's ADC reads with calibration, per attenuation (Espressif's ADC guide): the range it
# reads accurately, and what it reads at full scale (an open line). The C3 and S3 read at least as far.
ADC_RANGE_V = {"0db": (0.10, 0.95, 1.0), "2_5db": (0.10, 1.25, 1.3), "6db": (0.15, 1.75, 1.9),
               "11db": (0.15, 2.45, 3.0)}
BAND_GAP = 0.1  # adjacent nominal voltages at least this share of supply_v apart: noise and tolerances


class BoardError(ProvisionError):
    pass


@dataclass(frozen=True)
class Filesystem:
    offset: int
    size: int
    block_size: int
    read_size: int
    prog_size: int
    lookahead: int

    @property
    def block_count(self) -> int:
        return self.size // self.block_size


@dataclass(frozen=True)
class Board:
    name: str
    chip: str
    flash_size: str
    firmware_offset: int
    filesystem: Filesystem
    usb: str
    power: str
    supervision: str
    pins: dict[str, dict[str, Any]]
    sensors: tuple[str, ...]
    description: str = ""
    panel: dict[str, Any] | None = None

    @property
    def flash_bytes(self) -> int:
        return FLASH_SIZES[self.flash_size] * 1024 * 1024

    @property
    def is_virtual(self) -> bool:
        return self.chip == "virtual"

    def board_json(self) -> dict[str, Any]:
        """What goes into the image as /board.json (read by firmware/config.py load_board)."""
        return {
            "name": self.name,
            "chip": self.chip,
            "pins": self.pins,
            "sensors": list(self.sensors),
            "power": self.power,
            "supervision": self.supervision,
            "usb": self.usb,
        } | ({"panel": self.panel} if self.panel else {})


def _int(board: str, key: str, v: Any, minimum: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise BoardError(f"board '{board}': '{key}' must be an integer >= {minimum}, got {v!r}")
    return v


def _choice(board: str, key: str, v: Any, choices) -> str:
    if v not in choices:
        raise BoardError(f"board '{board}': '{key}' must be one of {', '.join(choices)}, got {v!r}")
    return v


def _filesystem(name: str, raw: Any, flash_bytes: int) -> Filesystem:
    if not isinstance(raw, dict):
        raise BoardError(f"board '{name}': 'filesystem' must be a mapping with {', '.join(FS_KEYS)}")
    for key in raw:
        if key not in FS_KEYS:
            raise BoardError(f"board '{name}': unknown key 'filesystem.{key}'")
    vals = {}
    for key in FS_KEYS:
        if key not in raw:
            raise BoardError(f"board '{name}': missing 'filesystem.{key}'")
        vals[key] = _int(name, f"filesystem.{key}", raw[key], 1 if key != "offset" else 0)
    fs = Filesystem(**vals)
    if fs.size % fs.block_size:
        raise BoardError(f"board '{name}': 'filesystem.size' must be a multiple of block_size {fs.block_size}")
    if fs.offset % 4096:
        raise BoardError(f"board '{name}': 'filesystem.offset' must be 4096-aligned")
    for key in ("read_size", "prog_size"):
        if fs.block_size % getattr(fs, key):
            raise BoardError(f"board '{name}': 'filesystem.{key}' must divide block_size")
    if fs.offset + fs.size != flash_bytes:
        raise BoardError(
            f"board '{name}': 'filesystem' must run to the end of the flash "
            f"(offset 0x{fs.offset:x} + size 0x{fs.size:x} != flash 0x{flash_bytes:x}); MicroPython sizes "
            f"its vfs partition that way and a different block count boot-loops the board"
        )
    return fs


def _pins(name: str, chip: str, raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise BoardError(f"board '{name}': 'pins' must be a mapping")
    used: dict[int, str] = {}
    for entry, spec in raw.items():
        if entry not in PIN_KINDS:
            raise BoardError(f"board '{name}': unknown pin entry 'pins.{entry}' (known: {', '.join(PIN_KINDS)})")
        if not isinstance(spec, dict):
            raise BoardError(f"board '{name}': 'pins.{entry}' must be a mapping")
        required, gpio_keys, out_keys = PIN_KINDS[entry]
        for key in required:
            if key not in spec:
                raise BoardError(f"board '{name}': missing 'pins.{entry}.{key}'")
        for key in gpio_keys:
            gpio = _int(name, f"pins.{entry}.{key}", spec[key])
            if chip in GPIO and gpio not in GPIO[chip]:
                raise BoardError(f"board '{name}': 'pins.{entry}.{key}' GPIO{gpio} is not usable on {chip}")
            if key in out_keys and gpio in INPUT_ONLY.get(chip, ()):
                raise BoardError(f"board '{name}': 'pins.{entry}.{key}' GPIO{gpio} is input-only on {chip}")
            if gpio in used:
                raise BoardError(f"board '{name}': 'pins.{entry}.{key}' GPIO{gpio} is already used by {used[gpio]}")
            used[gpio] = f"pins.{entry}.{key}"
        if entry in ADC_ENTRIES:
            if chip in ADC1 and spec["pin"] not in ADC1[chip]:
                raise BoardError(
                    f"board '{name}': 'pins.{entry}.pin' GPIO{spec['pin']} is not an ADC1 pin on {chip} "
                    f"(ADC2 cannot be read while Wi-Fi is on)"
                )
            _choice(name, f"pins.{entry}.atten", spec["atten"], ATTEN)
        if "active" in spec:
            _choice(name, f"pins.{entry}.active", spec["active"], ("high", "low"))
        if "pull" in spec:
            _choice(name, f"pins.{entry}.pull", spec["pull"], ("up", "down", "none"))
    return raw


def _used_gpios(pins: dict[str, dict[str, Any]]) -> dict[int, str]:
    return {spec[key]: f"pins.{entry}.{key}" for entry, spec in pins.items() for key in PIN_KINDS[entry][1]}


def _number(board: str, key: str, v: Any, lo: float, hi: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise BoardError(f"board '{board}': '{key}' must be a number {lo:g}..{hi:g}, got {v!r}")
    return v


def _panel(name: str, chip: str, raw: Any, pins: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The panel's resistor network and inputs: values in range, inputs on free ADC1 pins, and four
    bands the ADC can tell apart."""
    if not isinstance(raw, dict):
        raise BoardError(f"board '{name}': 'panel' must be a mapping with {', '.join(PANEL_KEYS)}")
    for key in raw:
        if key not in PANEL_KEYS:
            raise BoardError(f"board '{name}': unknown key 'panel.{key}' (known: {', '.join(PANEL_KEYS)})")
    for key in PANEL_KEYS:
        if key not in raw:
            raise BoardError(f"board '{name}': missing 'panel.{key}'")
    _number(name, "panel.supply_v", raw["supply_v"], *SUPPLY_V)
    for key in ("r_pull", "r_eol", "r_alarm"):
        _number(name, f"panel.{key}", raw[key], *OHMS)
    v = nominal(raw)
    for k in range(3):
        if v[k + 1] - v[k] < BAND_GAP * raw["supply_v"]:
            raise BoardError(
                f"board '{name}': the panel's {STATES[k]} and {STATES[k + 1]} voltages ({v[k]:.2f} V, "
                f"{v[k + 1]:.2f} V) are closer than {BAND_GAP * raw['supply_v']:.2f} V: choose r_pull, r_eol "
                f"and r_alarm further apart (docs/transmitter.md)")
    inputs = raw["inputs"]
    if not isinstance(inputs, list) or not 0 < len(inputs) <= PANEL_MAX_INPUTS:
        raise BoardError(f"board '{name}': 'panel.inputs' must be a list of 1..{PANEL_MAX_INPUTS} inputs")
    used = _used_gpios(pins)
    names: set[str] = set()
    edge_open = thresholds(raw)[2]
    for n, spec in enumerate(inputs):
        where = f"panel.inputs[{n}]"
        if not isinstance(spec, dict):
            raise BoardError(f"board '{name}': '{where}' must be a mapping")
        for key in spec:
            if key not in PANEL_INPUT_KEYS:
                raise BoardError(f"board '{name}': unknown key '{where}.{key}' (known: {', '.join(PANEL_INPUT_KEYS)})")
        needed = ("name", "role") if chip == "virtual" else ("name", "role", "pin", "atten")
        for key in needed:
            if key not in spec:
                raise BoardError(f"board '{name}': missing '{where}.{key}'")
        iname = spec["name"]
        if not isinstance(iname, str) or not re.fullmatch(r"[a-z0-9_-]{1,16}", iname):
            raise BoardError(f"board '{name}': '{where}.name' must be 1-16 of a-z 0-9 _ -, got {iname!r}")
        if iname in names:
            raise BoardError(f"board '{name}': '{where}.name' {iname!r} is used by another input")
        names.add(iname)
        _choice(name, f"{where}.role", spec["role"], PANEL_ROLES)
        zone = spec.get("zone")
        if zone is not None and (not isinstance(zone, str) or not 0 < len(zone) <= 100):
            raise BoardError(f"board '{name}': '{where}.zone' must be a text of 1..100 characters")
        if "pin" in spec:
            gpio = _int(name, f"{where}.pin", spec["pin"])
            if chip in ADC1 and gpio not in ADC1[chip]:
                raise BoardError(f"board '{name}': '{where}.pin' GPIO{gpio} is not an ADC1 pin on {chip} "
                                 f"(ADC2 cannot be read while Wi-Fi is on)")
            if gpio in used:
                raise BoardError(f"board '{name}': '{where}.pin' GPIO{gpio} is already used by {used[gpio]}")
            used[gpio] = f"{where}.pin"
        if "atten" in spec:
            lo, hi, full = ADC_RANGE_V[_choice(name, f"{where}.atten", spec["atten"], ATTEN)]
            for state, volts in (("active", v[1]), ("normal", v[2])):
                if not lo <= volts <= hi:
                    raise BoardError(f"board '{name}': '{where}.atten' {spec['atten']} reads {lo:g}-{hi:g} V well, "
                                     f"but the line reads {volts:.2f} V when {state}: choose another attenuation "
                                     f"or other resistors")
            if min(full, raw["supply_v"]) <= edge_open:
                raise BoardError(f"board '{name}': '{where}.atten' {spec['atten']} reads at most {full:g} V, below "
                                 f"the open-line edge {edge_open:.2f} V: a cut line would read as normal")
    if not any(i["role"] == "fire" for i in inputs):
        raise BoardError(f"board '{name}': 'panel.inputs' has no input with role fire")
    return raw


def validate_board(name: str, raw: Any) -> Board:
    if not isinstance(raw, dict):
        raise BoardError(f"board '{name}': entry must be a mapping")
    for key in raw:
        if key not in REQUIRED and key not in OPTIONAL:
            raise BoardError(f"board '{name}': unknown key '{key}'")
    for key in REQUIRED:
        if key not in raw:
            raise BoardError(f"board '{name}': missing '{key}'")
    chip = _choice(name, "chip", raw["chip"], CHIPS)
    flash_size = _choice(name, "flash_size", raw["flash_size"], tuple(FLASH_SIZES))
    fw_offset = _int(name, "firmware_offset", raw["firmware_offset"])
    expected = 0x1000 if chip == "esp32" else 0x0
    if fw_offset != expected:
        raise BoardError(f"board '{name}': 'firmware_offset' for {chip} is 0x{expected:x}, got 0x{fw_offset:x}")
    fs = _filesystem(name, raw["filesystem"], FLASH_SIZES[flash_size] * 1024 * 1024)
    if fs.offset < 0x10000:
        raise BoardError(f"board '{name}': 'filesystem.offset' overlaps the bootloader and firmware")
    pins = _pins(name, chip, raw["pins"])
    panel = _panel(name, chip, raw["panel"], pins) if "panel" in raw else None
    sensors = raw["sensors"]
    if not isinstance(sensors, list):
        raise BoardError(f"board '{name}': 'sensors' must be a list")
    for s in sensors:
        _choice(name, "sensors", s, tuple(SENSORS))
        if chip != "virtual" and SENSORS[s] not in pins:
            raise BoardError(f"board '{name}': sensor '{s}' is fitted but 'pins.{SENSORS[s]}' is missing")
    power = _choice(name, "power", raw["power"], POWER)
    if power == "battery" and chip != "virtual" and "battery_adc" not in pins:
        raise BoardError(f"board '{name}': battery powered but 'pins.battery_adc' is missing")
    if chip != "virtual" and "button" not in pins:
        raise BoardError(f"board '{name}': missing 'pins.button'")
    return Board(
        name=name,
        chip=chip,
        flash_size=flash_size,
        firmware_offset=fw_offset,
        filesystem=fs,
        usb=_choice(name, "usb", raw["usb"], USB),
        power=power,
        supervision=_choice(name, "supervision", raw["supervision"], SUPERVISION),
        pins=pins,
        sensors=tuple(sensors),
        description=str(raw.get("description", "")),
        panel=panel,
    )


def load_boards(path: Path | str = BOARDS_YAML) -> dict[str, Board]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise BoardError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise BoardError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict) or not raw:
        raise BoardError(f"{path}: expected a mapping of board name -> entry")
    return {str(name): validate_board(str(name), entry) for name, entry in raw.items()}


def get_board(name: str, path: Path | str = BOARDS_YAML) -> Board:
    boards = load_boards(path)
    if name not in boards:
        raise BoardError(f"unknown board '{name}'; known boards: {', '.join(sorted(boards))}")
    return boards[name]

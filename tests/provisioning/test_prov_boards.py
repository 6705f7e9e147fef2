"""boards.yaml: every entry is valid, the geometry is MicroPython's, and bad entries are named clearly."""

import copy

import pytest
import yaml
from prov_helpers import run_cli

from provisioning.boards import BOARDS_YAML, BoardError, get_board, load_boards

REAL = yaml.safe_load(BOARDS_YAML.read_text())


def write_boards(tmp_path, entries):
    p = tmp_path / "boards.yaml"
    p.write_text(yaml.safe_dump(entries, sort_keys=False))
    return p


def test_every_board_in_the_repository_loads():
    boards = load_boards()
    assert {"esp32-devkitc", "esp32-c3-devkitm", "esp32-s3-devkitc", "esp32-panic-battery", "virtual"} <= set(boards)
    chips = {b.chip for b in boards.values()}
    assert {"esp32", "esp32c3", "esp32s3", "virtual"} <= chips


def test_filesystem_geometry_is_micropythons_vfs_partition():
    assert get_board("esp32-devkitc").filesystem.block_count == 512  # 4 MiB flash -> 2 MiB
    s3 = get_board("esp32-s3-devkitc")
    assert s3.filesystem.offset == 0x200000 and s3.filesystem.size == 6 * 1024 * 1024  # 8 MiB -> 6 MiB
    assert s3.filesystem.block_count == 1536
    for b in load_boards().values():
        fs = b.filesystem
        assert (fs.block_size, fs.read_size, fs.prog_size, fs.lookahead) == (4096, 32, 32, 32)
        assert fs.offset + fs.size == b.flash_bytes


def test_firmware_offsets_follow_the_chip():
    assert get_board("esp32-devkitc").firmware_offset == 0x1000
    assert get_board("esp32-c3-devkitm").firmware_offset == 0
    assert get_board("esp32-s3-devkitc").firmware_offset == 0


def test_panic_button_is_battery_supervised_with_a_battery_divider():
    b = get_board("esp32-panic-battery")
    assert b.power == "battery" and b.supervision == "battery"
    assert b.pins["battery_adc"]["divider"] == 2.0


def test_board_json_has_what_the_firmware_reads():
    j = get_board("esp32-devkitc").board_json()
    assert {"name", "chip", "pins", "sensors", "power", "supervision"} <= set(j)
    assert j["name"] == "esp32-devkitc" and j["pins"]["button"]["pin"] == 0
    assert j["sensors"] == ["bme680", "gps", "smoke"]


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError, match=r"unknown board 'esp32-wroom'.*esp32-devkitc"):
        get_board("esp32-wroom")


def _broken(tmp_path, mutate):
    entries = {"esp32-devkitc": copy.deepcopy(REAL["esp32-devkitc"])}
    mutate(entries["esp32-devkitc"])
    return write_boards(tmp_path, entries)


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.pop("chip"), r"board 'esp32-devkitc': missing 'chip'"),
    (lambda e: e.update(chip="esp8266"), r"board 'esp32-devkitc': 'chip' must be one of"),
    (lambda e: e["filesystem"].pop("block_size"), r"missing 'filesystem.block_size'"),
    (lambda e: e["filesystem"].update(size=0x100000), r"must run to the end of the flash"),
    (lambda e: e.update(firmware_offset=0), r"'firmware_offset' for esp32 is 0x1000"),
    (lambda e: e["pins"]["buzzer"].update(pin=2), r"'pins.buzzer.pin' GPIO2 is already used by pins.led.pin"),
    (lambda e: e["pins"]["smoke_adc"].update(pin=4), r"'pins.smoke_adc.pin' GPIO4 is not an ADC1 pin"),
    (lambda e: e["pins"]["led"].update(pin=35), r"'pins.led.pin' GPIO35 is input-only"),
    (lambda e: e["pins"].pop("i2c"), r"sensor 'bme680' is fitted but 'pins.i2c' is missing"),
    (lambda e: e.update(colour="red"), r"unknown key 'colour'"),
    (lambda e: e.update(power="battery"), r"battery powered but 'pins.battery_adc' is missing"),
])
def test_a_broken_entry_is_refused_naming_board_and_key(tmp_path, mutate, message):
    path = _broken(tmp_path, mutate)
    with pytest.raises(BoardError, match=message):
        load_boards(path)


def test_unreadable_yaml_is_reported(tmp_path):
    p = tmp_path / "boards.yaml"
    p.write_text("esp32: [unclosed\n")
    with pytest.raises(BoardError, match="not valid YAML"):
        load_boards(p)


def test_boards_command_lists_each_board_and_what_is_fitted(tmp_path):
    r = run_cli("boards", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "esp32-s3-devkitc" in r.stdout and "sensors: bme680, gps, smoke" in r.stdout
    assert "sensors: none; power battery; supervision battery" in r.stdout
    assert "smoke_adc=GPIO34" in r.stdout


def test_help_teaches_with_examples(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0 and "new-device --csv" in r.stdout and "verify --device" in r.stdout
    for cmd in ("new-device", "build", "flash", "verify", "register", "broker-config"):
        r = run_cli(cmd, "--help", cwd=tmp_path)
        assert r.returncode == 0 and "Example" in r.stdout, cmd


def test_installer_guide_wiring_tables_match_boards_yaml():
    import re

    from provisioning.wiring import wiring_markdown

    guide = (BOARDS_YAML.parent / "docs" / "installer-guide.md").read_text()
    blocks = dict(re.findall(r"<!-- wiring:(\S+) [^>]*-->\n(.*?)<!-- /wiring -->", guide, re.S))
    boards = load_boards()
    assert set(blocks) == set(boards), "every board needs its wiring table in docs/installer-guide.md"
    for name, board in boards.items():
        assert blocks[name] == wiring_markdown(board), f"regenerate: baochay-provision boards --wiring {name}"


def test_transmitter_boards_carry_their_panel_into_board_json():
    tx = get_board("transmitter")
    j = tx.board_json()
    assert j["panel"]["r_eol"] == 4700 and [i["pin"] for i in j["panel"]["inputs"]] == [34, 35]
    assert j["pins"]["ack_output"] == {"pin": 26, "active": "high"}
    assert "panel" not in get_board("esp32-devkitc").board_json()  # only where there is a panel
    v = get_board("virtual-transmitter")
    assert v.is_virtual and {i["role"] for i in v.panel["inputs"]} == {"fire", "fault"}


def _panel_broken(tmp_path, mutate):
    entries = {"transmitter": copy.deepcopy(REAL["transmitter"])}
    mutate(entries["transmitter"])
    return write_boards(tmp_path, entries)


def _inp(n, **over):
    return lambda e: e["panel"]["inputs"][n].update(over)


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e["panel"].pop("r_eol"), r"board 'transmitter': missing 'panel.r_eol'"),
    (lambda e: e["panel"].update(r_eol="4k7"), r"'panel.r_eol' must be a number 100..1e\+06, got '4k7'"),
    (lambda e: e["panel"].update(supply_v=5.0), r"'panel.supply_v' must be a number 1.8..3.6"),
    (lambda e: e["panel"].update(colour=1), r"unknown key 'panel.colour'"),
    (lambda e: e["panel"].update(r_alarm=47000), r"the panel's active and normal voltages \(1.5\d V, 1.65 V\) are closer"),
    (lambda e: e["panel"].update(r_alarm=100), r"the panel's short and active voltages .* are closer"),
    (lambda e: e["panel"].update(inputs=[]), r"'panel.inputs' must be a list of 1..8 inputs"),
    (_inp(0, pin=4), r"'panel.inputs\[0\].pin' GPIO4 is not an ADC1 pin"),
    (_inp(1, pin=34), r"'panel.inputs\[1\].pin' GPIO34 is already used by panel.inputs\[0\].pin"),
    (_inp(0, pin=25), r"GPIO25 is not an ADC1 pin"),
    (lambda e: e["pins"].update(ack_output={"pin": 32, "active": "high"}) or _inp(0, pin=32)(e),
     r"'panel.inputs\[0\].pin' GPIO32 is already used by pins.ack_output.pin"),
    (_inp(0, role="smoke"), r"'panel.inputs\[0\].role' must be one of fire, fault"),
    (_inp(1, name="fire"), r"'panel.inputs\[1\].name' 'fire' is used by another input"),
    (_inp(0, name="Fire Relay"), r"'panel.inputs\[0\].name' must be 1-16 of a-z"),
    (_inp(0, atten="6db"), r"'panel.inputs\[0\].atten' 6db reads at most 1.9 V, below the open-line edge 2.47"),
    (_inp(0, atten="0db"), r"'panel.inputs\[0\].atten' 0db reads 0.1-0.95 V well, but the line reads 1.65 V when normal"),
    (lambda e: e["panel"]["inputs"][0].pop("atten"), r"missing 'panel.inputs\[0\].atten'"),
    (_inp(0, role="fault"), r"'panel.inputs' has no input with role fire"),
    (lambda e: e["pins"]["ack_output"].update(pin=36), r"'pins.ack_output.pin' GPIO36 is input-only"),
])
def test_a_broken_panel_is_refused_naming_the_key(tmp_path, mutate, message):
    with pytest.raises(BoardError, match=message):
        load_boards(_panel_broken(tmp_path, mutate))


def test_the_validator_uses_the_firmwares_bands():
    from firmware.panel import thresholds

    edges = thresholds(get_board("transmitter").panel)
    assert [round(e, 3) for e in edges] == [0.246, 1.071, 2.475]

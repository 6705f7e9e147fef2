"""new-device: records with fresh secrets, private files, CSV import for a building, clear refusals."""

import codecs
import json
import os
import stat
import subprocess

import pytest
from prov_helpers import ROOT, micropython, run_cli

from provisioning.devices import DeviceError, load_device

NEW = ["new-device", "--devices-dir", "devices", "--broker-host", "127.0.0.1", "--no-tls"]
SITE = ["--building", "Toà A", "--address", "1 Tràng Tiền", "--floor", "3", "--room", "301",
        "--lat", "21.028511", "--lon", "105.804817", "--acc", "15", "--contact-phone", "0901234567",
        "--province", "Hà Nội"]
HEADER = "id,board,building,address,floor,room,lat,lon,acc,contact_phone,province\n"


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_device_writes_a_private_record_the_firmware_accepts(tmp_path):
    r = run_cli(*NEW, "--id", "hn-a-0001", "--board", "esp32-devkitc", *SITE, "--wifi-ssid", "SiteWiFi",
                cwd=tmp_path, env_extra={"BAOCHAY_WIFI_PASSWORD": "wifi-secret"})
    assert r.returncode == 0, r.stderr
    d = tmp_path / "devices" / "hn-a-0001"
    cfg = json.loads((d / "device.json").read_text())
    assert mode(d) == 0o700 and mode(d / "device.json") == 0o600
    assert len(cfg["key"]) == 64 and int(cfg["key"], 16) >= 0
    assert cfg["key"] not in r.stdout + r.stderr  # the key is never shown
    assert cfg["mqtt"]["password"] not in r.stdout + r.stderr
    assert cfg["mqtt"] == {"host": "127.0.0.1", "port": 1883, "user": "hn-a-0001",
                           "password": cfg["mqtt"]["password"], "tls": False, "keepalive": 30}
    assert cfg["wifi"] == {"ssid": "SiteWiFi", "password": "wifi-secret"}
    assert cfg["loc"] == {"lat": 21.028511, "lon": 105.804817, "acc": 15}
    assert cfg["site"]["building"] == "Toà A" and cfg["site"]["province"] == "Hà Nội"
    # the firmware's own validator (firmware/config.py) accepts it, on the real MicroPython
    cfg_path = str(d / "device.json")
    code = ("import sys; sys.path.insert(0, 'firmware'); import config; "
            f"c = config.load({cfg_path!r}); print(c['dev'], c['mqtt']['user'], len(c['key_bytes']))")
    out = subprocess.run([micropython(), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["hn-a-0001", "hn-a-0001", "32"], out.stdout + out.stderr


def test_two_devices_get_different_keys_and_passwords(make_device):
    a, _ = make_device("hn-a-0001")
    b, _ = make_device("hn-a-0002")
    assert a["key"] != b["key"] and a["mqtt"]["password"] != b["mqtt"]["password"]


def test_duplicate_device_id_is_refused(tmp_path):
    args = [*NEW, "--id", "hn-a-0001", "--board", "esp32-devkitc", *SITE]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    before = (tmp_path / "devices" / "hn-a-0001" / "device.json").read_text()
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert "device 'hn-a-0001' already exists" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "devices" / "hn-a-0001" / "device.json").read_text() == before  # key kept


def test_unknown_board_and_bad_id_are_refused(tmp_path):
    r = run_cli(*NEW, "--id", "hn-a-0001", "--board", "esp32-wroom", *SITE, cwd=tmp_path)
    assert r.returncode == 1 and "unknown board 'esp32-wroom'" in r.stderr and "esp32-devkitc" in r.stderr
    r = run_cli(*NEW, "--id", "HN_A", "--board", "esp32-devkitc", *SITE, cwd=tmp_path)
    assert r.returncode == 1 and "must be 3-32 characters" in r.stderr
    assert not (tmp_path / "devices" / "HN_A").exists()


def test_csv_bad_rows_are_reported_by_line_and_good_rows_still_created(tmp_path):
    csv = tmp_path / "toa-a.csv"
    csv.write_text(
        HEADER
        + "hn-a-0101,esp32-devkitc,Toà A,1 Tràng Tiền,1,101,21.0285,105.8048,10,0901234567,Hà Nội\n"  # line 2
        + "hn-a-0102,esp32-devkitc,Toà A,1 Tràng Tiền,1,102,north,105.8048,10,0901234567,Hà Nội\n"  # 3: lat
        + "hn-a-0103,esp32-nope,Toà A,1 Tràng Tiền,1,103,21.0285,105.8048,10,0901234567,Hà Nội\n"  # 4: board
        + "hn-a-0101,esp32-devkitc,Toà A,1 Tràng Tiền,1,104,21.0285,105.8048,10,0901234567,Hà Nội\n"  # 5: dup
        + "hn-a-0105,esp32-devkitc,Toà A\n"  # 6: short row
        + "hn-a-0106,esp32-panic-battery,Toà A,1 Tràng Tiền,2,201,21.0285,105.8048,10,0901234567,Hà Nội\n"
    )
    r = run_cli(*NEW, "--csv", str(csv), cwd=tmp_path)
    assert r.returncode == 1
    err = r.stderr
    assert "line 3: 'lat' is not a number" in err
    assert "line 4: unknown board 'esp32-nope'" in err
    assert "line 5: duplicate device id 'hn-a-0101' (first on line 2)" in err
    assert "line 6: expected 11 columns" in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert not any("line 2:" in ln or "line 7:" in ln for ln in errors), errors
    assert sorted(os.listdir(tmp_path / "devices")) == ["hn-a-0101", "hn-a-0106"]
    assert "2 device(s) created" in r.stdout and "4 row(s) refused" in r.stdout


def test_csv_with_a_wrong_header_names_the_missing_columns(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("id,board,building\nhn-a-0001,esp32-devkitc,A\n")
    r = run_cli(*NEW, "--csv", str(csv), cwd=tmp_path)
    assert r.returncode == 1 and "missing column(s) address" in r.stderr


def test_csv_refuses_ids_that_already_exist(tmp_path):
    assert run_cli(*NEW, "--id", "hn-a-0101", "--board", "esp32-devkitc", *SITE, cwd=tmp_path).returncode == 0
    csv = tmp_path / "again.csv"
    csv.write_text(HEADER + "hn-a-0101,esp32-devkitc,Toà A,1 Tràng Tiền,1,101,21.0,105.8,10,09,HN\n")
    r = run_cli(*NEW, "--csv", str(csv), cwd=tmp_path)
    assert r.returncode == 1 and "line 2: device 'hn-a-0101' already exists" in r.stderr


def test_a_key_file_readable_by_others_is_refused(tmp_path, make_device, devices_dir):
    make_device("hn-a-0001")
    path = devices_dir / "hn-a-0001" / "device.json"
    path.chmod(0o644)
    with pytest.raises(DeviceError, match=r"permissions 0644 let other users read the device key.*chmod 600"):
        load_device(devices_dir, "hn-a-0001")
    r = run_cli("build", "--devices-dir", str(devices_dir), "--device", "hn-a-0001", cwd=tmp_path)
    assert r.returncode == 1 and "chmod 600" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "build").exists()


ROW = "hn-a-0201,esp32-devkitc,Toà nhà Đông,12 Láng Hạ,3,301,21.0285,105.8048,10,0901234567,Hà Nội\n"


@pytest.mark.parametrize("encode", [
    pytest.param(lambda text: text.encode("utf-8"), id="utf-8"),
    pytest.param(lambda text: codecs.BOM_UTF8 + text.encode("utf-8"), id="utf-8 with BOM (CSV UTF-8)"),
    pytest.param(lambda text: text.replace(",", "\t").encode("utf-16"), id="utf-16 tab-separated (Unicode text)"),
    pytest.param(lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"), id="utf-16 big-endian"),
])
def test_csv_in_the_encodings_a_spreadsheet_writes(tmp_path, encode):
    csv = tmp_path / "export.csv"
    csv.write_bytes(encode(HEADER + ROW))
    r = run_cli(*NEW, "--csv", str(csv), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = "".join(json.dumps(json.loads(p.read_text(encoding="utf-8")), ensure_ascii=False)
                   for p in (tmp_path / "devices" / "hn-a-0201").glob("*.json"))
    assert "Toà nhà Đông" in text and "Láng Hạ" in text


def test_csv_in_another_encoding_is_refused_in_one_line(tmp_path):
    csv = tmp_path / "legacy.csv"
    csv.write_bytes((HEADER + ROW).encode("cp1258", errors="replace"))  # a Windows Vietnamese code page
    r = run_cli(*NEW, "--csv", str(csv), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "line 2: not UTF-8" in r.stderr and "save it from the spreadsheet as 'CSV UTF-8'" in r.stderr
    assert not (tmp_path / "devices").exists() or not list((tmp_path / "devices").iterdir())


def test_a_service_identity_is_never_a_device_id(tmp_path):
    from bridge.registry import Registry, RegistryError
    from firmware.protocol_host import RESERVED_IDS

    for reserved in RESERVED_IDS:
        r = run_cli(*NEW, "--id", reserved, "--board", "esp32-devkitc", *SITE, cwd=tmp_path)
        assert r.returncode == 1 and f"device id '{reserved}' is reserved" in r.stderr
        with pytest.raises(RegistryError, match="reserved for a service account"):
            Registry(tmp_path / "b.db").upsert({"id": reserved, "key": "ab" * 32})
    assert not (tmp_path / "devices").exists() or not list((tmp_path / "devices").iterdir())


def test_periodic_test_and_panel_confirmation_go_into_the_record(tmp_path):
    r = run_cli(*NEW, "--id", "tx-a-0001", "--board", "transmitter", *SITE, "--test-s", "3600",
                "--panel-confirm-ms", "2000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "devices" / "tx-a-0001" / "device.json").read_text())
    assert cfg["test_s"] == 3600 and cfg["panel_confirm_ms"] == 2000
    r = run_cli(*NEW, "--id", "hn-a-0001", "--board", "esp32-devkitc", *SITE, cwd=tmp_path)
    cfg = json.loads((tmp_path / "devices" / "hn-a-0001" / "device.json").read_text())
    assert cfg["test_s"] == 86400 and "panel_confirm_ms" not in cfg  # a board without a panel


@pytest.mark.parametrize("flag, value, words", [
    ("--test-s", "-1", "--test-s -1: must be 0 (no periodic test) or a number of seconds"),
    ("--panel-confirm-ms", "60001", "--panel-confirm-ms 60001: must be 0..60000"),
])
def test_bad_timing_is_refused(tmp_path, flag, value, words):
    r = run_cli(*NEW, "--id", "tx-a-0002", "--board", "transmitter", *SITE, flag, value, cwd=tmp_path)
    assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "devices" / "tx-a-0002").exists()

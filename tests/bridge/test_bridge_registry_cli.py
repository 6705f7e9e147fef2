"""Registry, CSV import, the operator CLI on a database, configuration and supervision rules."""

from __future__ import annotations

import json
import secrets

import pytest

from bridge import cli, config, db
from bridge.registry import Registry, RegistryError
from bridge.workers.supervision import Presence, apply_transitions

KEY = secrets.token_hex(32)


def test_upsert_get_list_and_defaults(tmp_path):
    reg = Registry(tmp_path / "b.db")
    reg.upsert({"id": "hn-a-0001", "key": KEY, "building": "A", "lat": "21.5", "supervision": "battery"})
    d = reg.get("hn-a-0001")
    assert d.key == bytes.fromhex(KEY) and d.lat == 21.5 and d.lon is None and d.room == ""
    assert d.supervision == "battery" and KEY not in repr(d)
    reg.upsert({"id": "hn-a-0001", "key": KEY, "building": "B"})
    assert [x.building for x in reg.list()] == ["B"]
    for bad in ({"id": "X", "key": KEY}, {"id": "hn-a-0002", "key": "12"},
                {"id": "hn-a-0002", "key": KEY, "supervision": "solar"}, {"id": "hn-a-0002", "key": KEY, "lat": 99}):
        with pytest.raises(RegistryError):
            reg.upsert(bad)
    # a device registered by another process (the provisioning tool) is found without a restart
    Registry(tmp_path / "b.db").upsert({"id": "hn-a-0003", "key": KEY})
    reg._cache_at = 0
    assert reg.get("hn-a-0003") is not None


def test_csv_import_reports_bad_rows_by_line_and_keeps_the_good(tmp_path, capsys):
    csv = tmp_path / "building.csv"
    csv.write_text(
        "id,key,building,floor,room,lat,lon,supervision\n"
        f"hn-b-0001,{KEY},B,1,101,21.0,105.8,mains\n"
        "hn-b-0002,nothex,B,1,102,21.0,105.8,mains\n"
        f"hn-b-0001,{KEY},B,1,103,21.0,105.8,mains\n"
        f"hn-b-0004,{KEY},B,2,201,abc,105.8,mains\n"
        f"hn-b-0005,{KEY},B,2,202,21.0,105.8,battery\n"
    )
    dbp = tmp_path / "b.db"
    rc = cli.main(["devices", "import", str(csv), "--db", str(dbp)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert f"{csv}:3: key must be 64 hex digits" in err
    assert f"{csv}:4: duplicate id 'hn-b-0001' (first on line 2)" in err
    assert f"{csv}:5: lat must be a number" in err
    assert "imported 2 device(s), 3 bad row(s)" in out
    assert [d.id for d in Registry(dbp).list()] == ["hn-b-0001", "hn-b-0005"]
    cli.main(["devices", "list", "--db", str(dbp)])
    listing = capsys.readouterr().out
    assert "hn-b-0005" in listing and KEY not in listing
    cli.main(["devices", "list", "--json", "--db", str(dbp)])
    assert KEY not in capsys.readouterr().out


def test_devices_add_and_status_without_a_running_bridge(tmp_path, capsys):
    dbp = str(tmp_path / "b.db")
    assert cli.main(["devices", "add", "hn-c-0009", "--key", KEY, "--db", dbp]) == 2  # never a key in argv
    assert "never on the command line" in capsys.readouterr().err
    assert cli.main(["devices", "add", "hn-c-0009", "--key", "@" + str(tmp_path / "none.key"), "--db", dbp]) == 2
    assert "cannot read the key file" in capsys.readouterr().err
    (tmp_path / "c1.key").write_text(KEY + "\n")
    assert cli.main(["devices", "add", "hn-c-0001", "--key", "@" + str(tmp_path / "c1.key"), "--building", "C",
                     "--floor", "4", "--contact-phone", "+84 1", "--db", dbp]) == 0
    assert cli.main(["status", "--db", dbp]) == 0
    out = capsys.readouterr().out
    assert "hn-c-0001" in out and "never" in out and "never ran" in out and KEY not in out
    assert cli.main(["status", "--json", "--db", dbp]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["devices"][0]["id"] == "hn-c-0001"


def test_config_file_and_environment_overrides(tmp_path):
    p = tmp_path / "bridge.yaml"
    p.write_text("db: data/bridge.db\nmqtt: {port: 1884, user: br}\n"
                 "sinks: [{name: a, type: cap}, {name: b, type: dc09}]\naccepted_from: b\n")
    cfg = config.load(p, environ={"BAOCHAY_MQTT__PASSWORD": "s3", "BAOCHAY_SUPERVISION__MAINS_S": "15",
                                  "BAOCHAY_BRIDGE_ID": "hn-1"})
    assert cfg["mqtt"]["port"] == 1884 and cfg["mqtt"]["password"] == "s3" and cfg["mqtt"]["user"] == "br"
    assert cfg["supervision"]["mains_s"] == 15 and cfg["bridge_id"] == "hn-1"
    assert cfg["mqtt"]["client_id"] == "baochay-bridge-hn-1" and cfg["db"] == str(tmp_path / "data/bridge.db")
    assert cfg["accepted_from"] == "b" and cfg["delivery"]["max_age_s"] == 100
    p.write_text("mqtt: {prot: 1}\n")
    with pytest.raises(config.ConfigError, match="mqtt.'prot'|'prot'"):
        config.load(p, environ={})
    p.write_text("sinks: [{name: a, type: cap}]\naccepted_from: z\n")
    with pytest.raises(config.ConfigError, match="accepted_from"):
        config.load(p, environ={})
    assert cfg["delivery"]["horizon_s"] == 86400 and cfg["delivery"]["late_backoff_max_s"] == 60
    p.write_text("delivery: {horizon_s: 50}\n")  # shorter than max_age_s: it would give up before failing
    with pytest.raises(config.ConfigError, match="horizon_s .* at least delivery.max_age_s"):
        config.load(p, environ={})
    p.write_text("delivery: {late_backoff_max_s: 0}\n")
    with pytest.raises(config.ConfigError, match="late_backoff_max_s must be a positive"):
        config.load(p, environ={})


class Dev:
    def __init__(self, id, supervision="mains"):
        self.id, self.supervision = id, supervision


def test_presence_by_traffic_and_class_periods(tmp_path):
    p = Presence({"mains": 20, "battery": 90000}, started_at=1000.0)
    devs = [Dev("m"), Dev("b", "battery"), Dev("never")]
    assert p.seen("m", 1000.0).online and p.seen("b", 1000.0).online
    assert p.sweep(devs, 1019.0) == []
    gone = {t.dev: t for t in p.sweep(devs, 1021.0)}
    assert set(gone) == {"m", "never"} and "silent for 21 s (mains limit 20 s)" in gone["m"].reason
    assert "not heard from" in gone["never"].reason
    assert p.sweep(devs, 1030.0) == []  # reported once
    back = p.seen("m", 1031.0)
    assert back.online
    lwt = p.gone("b", 1032.0, "connection lost (last will)")
    assert not lwt.online
    conn = db.connect(tmp_path / "b.db")
    apply_transitions(conn, [gone["m"], lwt])
    assert {r["device"] for r in conn.execute("SELECT device FROM faults WHERE open=1")} == {"m", "b"}
    apply_transitions(conn, [back])
    assert {r["device"] for r in conn.execute("SELECT device FROM faults WHERE open=1")} == {"b"}


def test_csv_import_takes_a_spreadsheets_unicode_text_and_refuses_other_encodings(tmp_path, capsys):
    text = f"id\tkey\tbuilding\tfloor\nhn-b-0011\t{KEY}\tToà nhà Đông\t1\n"
    csv = tmp_path / "unicode.txt"
    csv.write_bytes(text.encode("utf-16"))  # Excel's "Unicode text": UTF-16 with a BOM, tab-separated
    dbp = tmp_path / "b.db"
    assert cli.main(["devices", "import", str(csv), "--db", str(dbp)]) == 0
    assert Registry(dbp).get("hn-b-0011").building == "Toà nhà Đông"
    capsys.readouterr()
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes(f"id,key,building\nhn-b-0012,{KEY},Tòa nhà Tây\n".encode("cp1258", errors="replace"))
    assert cli.main(["devices", "import", str(legacy), "--db", str(dbp)]) == 1
    err = capsys.readouterr().err
    assert f"{legacy}:1:" in err and "line 2: not UTF-8" in err and "'CSV UTF-8'" in err
    assert Registry(dbp).get("hn-b-0012") is None

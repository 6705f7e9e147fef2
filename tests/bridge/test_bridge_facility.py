"""The facility record 114 sizes a response by: checked field by field at `facilities set` (one line
naming the field), shown by `facilities show` and `list`, updated field by field, and kept across a
database from before it (the columns added on open)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bridge import db
from bridge.cli import main

ADDRESS = "23 Phan Chu Trinh, Phường Cửa Nam, Thành phố Hà Nội"  # ward 00073, province 01
RECORD = ["--name", "Tòa nhà A", "--type", "apartment", "--floors-above", "12", "--floors-below", "2",
          "--occupancy-day", "300", "--occupancy-night", "450", "--hazard", "gas", "--hazard", "fuel",
          "--hazard-other", "kho sơn ở tầng hầm", "--water", "Trụ nước cổng chính, 20 m",
          "--water", "Hồ Hoàn Kiếm, 300 m", "--contact", "An=0901234567", "--contact", "Bình=+84 24 3825 0000",
          "--contact", "Bảo vệ=+84 900 000 003"]


@pytest.mark.parametrize("args,error", [
    (["--floors-above", "201"], "--floors-above must be a whole number from 0 to 200, not '201'"),
    (["--floors-below", "-1"], "--floors-below must be a whole number from 0 to 20"),
    (["--occupancy-night", "many"], "--occupancy-night must be a whole number from 0 to 200000, not 'many'"),
    (["--type", "castle"], "--type 'castle' is not one of: apartment,"),
    (["--hazard", "gas", "--hazard", "none"], "--hazard none cannot go with other hazards"),
    (["--hazard", "petrol"], "--hazard 'petrol' is not one of: gas, chemicals, fuel, none"),
    (["--hazard-other", "x" * 201], "--hazard-other must be at most 200 characters"),
    (["--water", "y" * 201], "at most 200 characters"),
    (["--name", "z" * 121], "--name must be at most 120 characters"),
    (["--contact", "An=0123"], "'0123' is not a Vietnamese number"),
    (["--contact", "An=+84 24 123"], "is not a Vietnamese number"),
    (["--contact", "An=12ab"], "8 to 15 digits"),
])
def test_facility_set_refuses_a_bad_field_with_one_line_naming_it(tmp_path, capsys, args, error):
    dbp = str(tmp_path / "b.db")
    assert main(["facilities", "set", "Toa nha A", *args, "--db", dbp]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and error in err and err.count("\n") == 1, err
    assert main(["facilities", "list", "--json", "--db", dbp]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing written


def test_facility_set_show_list_and_partial_updates(tmp_path, capsys):
    dbp = str(tmp_path / "b.db")
    assert main(["facilities", "set", "Toa nha A", *RECORD, "--db", dbp]) == 0
    capsys.readouterr()
    assert main(["facilities", "set", "Toa nha A", "--occupancy-night", "500", "--floors-below", "", "--db", dbp]) == 0
    capsys.readouterr()
    assert main(["facilities", "show", "Toa nha A", "--json", "--db", dbp]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["occupancy_night"] == 500 and f["floors_below"] is None  # '' : unknown again
    assert f["floors_above"] == 12 and f["hazards"] == ["gas", "fuel"]  # the rest kept
    assert [c["phone"] for c in f["contacts"]] == ["0901234567", "+842438250000", "+84900000003"]
    assert main(["facilities", "show", "Toa nha A", "--db", dbp]) == 0
    text = capsys.readouterr().out
    assert "apartment (Apartment building" in text and "12 above ground, - below" in text
    assert "Hồ Hoàn Kiếm, 300 m" in text and "kho sơn ở tầng hầm" in text
    assert main(["facilities", "list", "--db", dbp]) == 0
    assert "300/500" in capsys.readouterr().out
    assert main(["facilities", "show", "Nowhere", "--db", dbp]) == 1


def test_a_database_from_before_the_facility_record_migrates_on_open(tmp_path, capsys):
    dbp = tmp_path / "old.db"
    old = sqlite3.connect(dbp)  # the facilities and device_state tables as they were
    old.executescript("""
        CREATE TABLE facilities (id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '',
                                 contacts TEXT NOT NULL DEFAULT '[]', updated_at REAL NOT NULL DEFAULT 0);
        INSERT INTO facilities VALUES ('Toa nha A', 'Tòa nhà A', '[{"name": "An", "phone": "+84900000001"}]', 1);
        CREATE TABLE device_state (id TEXT PRIMARY KEY, online INTEGER NOT NULL DEFAULT 0,
                                   state_reason TEXT NOT NULL DEFAULT '', last_seen REAL);
        INSERT INTO device_state (id, last_seen) VALUES ('hn-t-0001', 5);
    """)
    old.close()
    conn = db.connect(dbp)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(facilities)")}
    assert {"type", "floors_above", "floors_below", "occupancy_day", "occupancy_night", "hazards",
            "hazards_other", "water_sources"} <= cols
    assert "last_test" in {r[1] for r in conn.execute("PRAGMA table_info(device_state)")}
    conn.close()
    assert main(["facilities", "show", "Toa nha A", "--json", "--db", str(dbp)]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["name"] == "Tòa nhà A" and f["contacts"] == [{"name": "An", "phone": "+84900000001"}]
    assert (f["type"], f["floors_above"], f["hazards"], f["water_sources"]) == ("", None, [], [])
    assert main(["facilities", "set", "Toa nha A", "--type", "market", "--db", str(dbp)]) == 0
    capsys.readouterr()
    assert main(["facilities", "show", "Toa nha A", "--json", "--db", str(dbp)]) == 0
    f = json.loads(capsys.readouterr().out)
    assert f["type"] == "market" and f["contacts"] == [{"name": "An", "phone": "+84900000001"}]

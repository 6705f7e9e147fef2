"""Addresses in the 2025 units: recognised ones get their official codes, pre-2025 ones are converted
and said so, unknown ones are kept as written and said so; through `devices add` and `devices import`."""

from __future__ import annotations

import secrets

from bridge import cli
from bridge.address import normalize
from bridge.registry import Registry

KEY = secrets.token_hex(32)


def test_a_current_address_gets_its_ward_province_and_official_codes():
    a, warnings = normalize("1 Tràng Tiền,  Phường Hoàn Kiếm, Hà Nội")
    assert warnings == []
    assert (a.street, a.ward, a.province) == ("1 Tràng Tiền", "Phường Hoàn Kiếm", "Thành phố Hà Nội")
    assert (a.ward_code, a.province_code) == ("00070", "01")  # vietnam-provinces' official list


def test_a_pre_2025_address_is_converted_and_said_so():
    # Đắk Nông joined Lâm Đồng on 1 July 2025, and districts are gone
    a, warnings = normalize("12 Nguyễn Tất Thành, Phường Nghĩa Đức, Thị xã Gia Nghĩa, Tỉnh Đắk Nông")
    assert a.province == "Tỉnh Lâm Đồng" and a.province_code == "68" and a.ward_code
    assert len(warnings) == 1 and "old-style address" in warnings[0] and a.text in warnings[0]


def test_districts_and_numbered_wards_of_the_old_units_are_converted():
    a, warnings = normalize("đường 3/2, phường 12, quận 10, TP.HCM")
    assert (a.ward, a.province, a.province_code) == ("Phường Hòa Hưng", "Thành phố Hồ Chí Minh", "79") and warnings
    a, _ = normalize("23 Phan Chu Trinh, Phường Phan Chu Trinh, Quận Hoàn Kiếm, Hà Nội")
    assert (a.ward, a.ward_code) == ("Phường Cửa Nam", "00073")  # the official code, not the parser's own


def test_a_street_called_after_a_place_is_not_taken_for_that_ward():
    a, warnings = normalize("12 Láng Hạ, Hà Nội")  # Láng Hạ street; no ward given
    assert a.text == "12 Láng Hạ, Hà Nội" and a.ward_code == "" and "not recognised" in warnings[0]
    a, warnings = normalize("12 Láng Hạ, Phường Láng, Hà Nội")
    assert (a.street, a.ward, a.ward_code) == ("12 Láng Hạ", "Phường Láng", "00187") and warnings == []


def test_a_separate_province_completes_the_address_and_an_unknown_one_is_kept():
    a, warnings = normalize("1 Tràng Tiền, Phường Hoàn Kiếm", province="Hà Nội")
    assert a.province_code == "01" and warnings == []
    a, warnings = normalize("Somewhere, Atlantis")
    assert a.text == "Somewhere, Atlantis" and a.ward_code == "" and "not recognised" in warnings[0]


def test_devices_add_and_import_warn_and_store_the_converted_address(tmp_path, capsys):
    dbp = tmp_path / "b.db"
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY)
    rc = cli.main(["devices", "add", "ln-a-0001", "--key", f"@{keyfile}", "--db", str(dbp),
                   "--address", "12 Nguyễn Tất Thành, Phường Nghĩa Đức, Thị xã Gia Nghĩa, Tỉnh Đắk Nông"])
    out = capsys.readouterr()
    assert rc == 0 and "warning: ln-a-0001: old-style address" in out.err
    assert "Tỉnh Lâm Đồng" in out.out
    csv = tmp_path / "site.csv"
    csv.write_text("id,key,building,address,province\n"
                   f"hn-a-0002,{KEY},A,\"1 Tràng Tiền, Phường Hoàn Kiếm\",Hà Nội\n"
                   f"hn-a-0003,{KEY},A,Nowhere,\n", encoding="utf-8")
    rc = cli.main(["devices", "import", str(csv), "--db", str(dbp)])
    out = capsys.readouterr()
    assert rc == 0 and f"{csv}:3: warning: hn-a-0003: address 'Nowhere'" in out.err
    reg = Registry(dbp)
    try:
        assert reg.get("ln-a-0001").province_code == "68"
        assert (reg.get("hn-a-0002").ward_code, reg.get("hn-a-0002").province_code) == ("00070", "01")
        assert reg.get("hn-a-0003").address == "Nowhere" and reg.get("hn-a-0003").ward_code == ""
    finally:
        reg.close()

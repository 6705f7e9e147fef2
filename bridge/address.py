"""Addresses after the 2025 administrative reform: street, ward or commune, province (34 provinces, no
district level since 1 July 2025), with the official unit codes 114 routes by.

Parsing and the conversion of pre-2025 addresses are vietnamadminunits'; the codes are
vietnam-provinces' official list, looked up by the ward's and province's names (the parser's own
codes differ for some merged wards). `normalize` never refuses an address: what it cannot
recognise is kept as written, without codes, and said in a warning.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import vietnam_provinces as vp
import vietnamadminunits as vau


@dataclass(frozen=True)
class Address:
    text: str  # the whole address as it is written after normalizing (or as given)
    street: str = ""
    ward: str = ""
    province: str = ""
    ward_code: str = ""
    province_code: str = ""


def _fold(text: str) -> str:
    """Lower case, no diacritics, đ as d, single spaces: to compare what was typed with a unit's name."""
    t = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", t).split())


_KINDS = ("thanh pho ", "tinh ", "phuong ", "xa ", "dac khu ")


def _short(name: str) -> str:
    f = _fold(name)
    for k in _KINDS:
        if f.startswith(k):
            return f[len(k):]
    return f


@functools.cache
def _provinces() -> frozenset[str]:
    return frozenset(_short(p.name) for p in vp.Province.iter_all())


def _legacy_marks(text: str) -> bool:
    """A district level (quận, huyện, thị xã, or a city that is not one of today's provinces): the
    address was written before the 2025 reform."""
    f = f" {_fold(text)} "
    if re.search(r"[ ,](quan|huyen|thi xa) ", f):
        return True
    for m in re.finditer(r" (?:thanh pho|tp) ([a-z ]+?)(?= ,| $|$)", f.replace(",", " , ")):
        if m.group(1).strip() not in _provinces() and m.group(1).strip() not in ("hcm", "ho chi minh"):
            return True
    return False


@functools.cache
def _codes() -> tuple[dict[str, int], dict[tuple[int, str], int]]:
    """vietnam-provinces' official list: province by name, ward by (province, name)."""
    provinces = {_short(p.name): int(p.code) for p in vp.Province.iter_all()}  # "Tỉnh" or not
    wards = {(int(w.province_code), _fold(w.name)): int(w.code) for w in vp.Ward.iter_all()}
    return provinces, wards


def _official(province: str, ward: str) -> tuple[str, str] | None:
    """The official (province, ward) codes of a ward named in a province, or None. The codes come
    from the official list, not from the parser, whose own codes differ for some merged wards."""
    provinces, wards = _codes()
    p = provinces.get(_short(province))
    w = wards.get((p, _fold(ward))) if p is not None else None
    return None if w is None else (f"{p:02d}", f"{w:05d}")


def _parts(typed: str) -> list[str]:
    return [_short(x) for x in typed.split(",")]


def _named(typed: str, unit: str) -> int:
    """Where the typed address names `unit` as a part of its own (between commas), or -1: a street
    called after a place ("12 Láng Hạ") does not make the address that ward's."""
    short = _short(unit)
    parts = _parts(typed)
    for i, p in enumerate(parts):
        if p == short or (short == "ho chi minh" and p in ("hcm", "tp hcm", "ho chi minh")):
            return i
    return -1


def _current(unit, typed: str) -> Address | None:
    """The parsed unit as an Address, when the typed address names its ward and then its province,
    each as a part of its own, and the official list knows them: the parser guesses, and a guess is
    not an address. The street is what was typed before the ward."""
    if not (unit.province and unit.ward):
        return None
    codes = _official(unit.province, unit.ward)
    w, p = _named(typed, unit.ward), _named(typed, unit.province)
    if codes is None or w < 0 or p <= w:
        return None
    street = ", ".join(x.strip() for x in typed.split(",")[:w])
    text = ", ".join(x for x in (street, unit.ward, unit.province) if x)
    return Address(text, street, unit.ward, unit.province, codes[1], codes[0])


def _converted(old, new, typed: str) -> Address | None:
    """A pre-2025 address in today's units: the old ward must be a part of what was typed."""
    if not (old.province and old.ward and new.province and new.ward) or _named(typed, old.ward) < 0:
        return None
    codes = _official(new.province, new.ward)
    if codes is None:
        return None
    street = ", ".join(x.strip() for x in typed.split(",")[:_named(typed, old.ward)])
    text = ", ".join(x for x in (street, new.ward, new.province) if x)
    return Address(text, street, new.ward, new.province, codes[1], codes[0])


def normalize(text: str, province: str = "") -> tuple[Address, list[str]]:
    """An address as an installer typed it -> (Address, warnings). `province`, when given apart (a CSV
    column), completes an address that does not name it."""
    text = " ".join((text or "").split())
    province = " ".join((province or "").split())
    if text and province and _fold(province) not in _fold(text):
        text = f"{text}, {province}"
    if not text:
        return Address(""), []
    if not _legacy_marks(text):
        try:
            now = _current(vau.parse_address(text), typed=text)
        except Exception:  # the parser raises on odd input: treat it as not recognised
            now = None
        if now is not None:
            return now, []
    try:
        conv = _converted(vau.parse_address(text, mode=vau.ParseMode.LEGACY), vau.convert_address(text), text)
        if conv is not None:
            return conv, [f"old-style address (before the 2025 reform: district level, old province): "
                          f"{text!r} is now {conv.text!r}; stored as the new one"]
    except Exception:
        pass
    return Address(text), [f"address {text!r}: ward and province not recognised; stored as written, without "
                           "the unit codes 114 routes by (write it as 'street, ward or commune, province')"]

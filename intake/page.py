"""The intake's web page: incidents as they arrive, newest first, refreshed every 2 seconds.

Every value that came from a client goes through `html.escape`: a building name is data, never markup.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

STATUS_LABEL = {
    "open": "Đang xử lý / open",
    "cancelled": "Đã huỷ / cancelled",
    "restored": "Đã khôi phục / restored",
}
TYPE_LABEL = {"fire": "Cháy / fire", "rescue": "Cứu nạn / rescue", "accident": "Tai nạn / accident"}

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#f3f3f3}
tr.open td:first-child{border-left:4px solid #c62828}
tr.cancelled{color:#777}
tr.restored td:first-child{border-left:4px solid #2e7d32}
.mono{font-family:ui-monospace,monospace}
"""


def _e(value: object) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _map_link(loc: dict | None) -> str:
    if not isinstance(loc, dict) or not isinstance(loc.get("lat"), (int, float)):
        return ""
    lat, lon = loc["lat"], loc.get("lon")
    href = "https://www.openstreetmap.org/?" + urlencode({"mlat": lat, "mlon": lon}) + f"#map=18/{lat}/{lon}"
    text = f"{lat:.6f}, {lon:.6f}" if isinstance(lon, (int, float)) else str(lat)
    acc = loc.get("accuracy_m")
    extra = f" ±{_e(acc)} m {_e(loc.get('source'))}" if acc is not None else ""
    return f'<a class="mono" href="{_e(href)}">{_e(text)}</a>{extra}'


HAZARD_LABEL = {"gas": "khí đốt / gas", "chemicals": "hoá chất / chemicals", "fuel": "nhiên liệu / fuel",
                "none": "không / none"}


def _count(v: object) -> str:
    return "?" if v is None else _e(v)


def _facility(f: object) -> str:
    """What a crew needs at a glance: the kind of place, its floors, how many people, what burns, the
    water, whom to call."""
    if not isinstance(f, dict):
        return ""
    names = f.get("type_name")
    kind = (names.get("vi") if isinstance(names, dict) else None) or f.get("type") or ""
    parts = [f"<strong>{_e(f.get('name') or f.get('id'))}</strong>" + (f"<br>{_e(kind)}" if kind else "")]
    if f.get("floors_above") is not None or f.get("floors_below") is not None:
        parts.append(f"{_count(f.get('floors_above'))} tầng nổi / above, {_count(f.get('floors_below'))} hầm / below")
    if f.get("occupancy_day") is not None or f.get("occupancy_night") is not None:
        parts.append(f"người / people: ngày / day {_count(f.get('occupancy_day'))}, "
                     f"đêm / night {_count(f.get('occupancy_night'))}")
    hazards = [HAZARD_LABEL.get(h, str(h)) for h in f.get("hazards") or () if isinstance(h, str)]
    if f.get("hazards_other"):
        hazards.append(str(f["hazards_other"]))
    if hazards:
        parts.append("nguy hiểm / hazards: " + _e(", ".join(hazards)))
    water = [w for w in f.get("water_sources") or () if isinstance(w, str)]
    if water:
        parts.append("nước / water: " + _e("; ".join(water)))
    contacts = [c for c in f.get("contacts") or () if isinstance(c, dict)]
    if contacts:
        parts.append("liên hệ / contacts: " + "; ".join(
            f'{_e(c.get("name"))} <span class="mono">{_e(c.get("phone"))}</span>'.strip() for c in contacts))
    return "<br>".join(parts)


def _row(inc: dict) -> str:
    place = " / ".join(_e(x) for x in (inc.get("building"), inc.get("floor"), inc.get("room")) if x)
    conf = inc.get("confidence")
    conf_text = f"{conf:.2f}" if isinstance(conf, (int, float)) else ""
    status = inc.get("status", "")
    kind = inc.get("type") or ""
    cells = [
        f'<span class="mono">{_e(inc.get("received_at"))}</span>',
        f'<span class="mono">{_e(inc.get("incident_id"))}</span>',
        f"{_e(TYPE_LABEL.get(kind, kind))}<br>{_e(inc.get('event_type'))} · {_e(inc.get('cause'))}",
        f"{_e(inc.get('address'))}<br>{_e(inc.get('province'))}" + (
            f'<br><span class="mono">{_e(inc.get("ward_code"))} / {_e(inc.get("province_code"))}</span>'
            if inc.get("ward_code") else ""),
        place,
        _facility(inc.get("facility")),
        _map_link(inc.get("location")),
        conf_text,
        _e(STATUS_LABEL.get(status, status)),
        f'<span class="mono">{_e(inc.get("device_id"))}</span><br>{_e(inc.get("client"))}',
    ]
    return f'<tr class="{_e(status)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render(incidents: list[dict], mode: dict) -> str:
    head = (
        "Thời gian / received", "Mã sự cố / incident", "Loại / type", "Địa chỉ · mã phường / tỉnh / address · codes",
        "Toà nhà · tầng · phòng / building", "Cơ sở / facility", "Toạ độ / coordinates", "Độ tin cậy / confidence",
        "Trạng thái / status", "Thiết bị · khách / device · client",
    )
    rows = "".join(_row(i) for i in incidents) or f'<tr><td colspan="{len(head)}">Chưa có sự cố / no incidents yet</td></tr>'
    banner = ""
    if mode.get("mode") != "normal":
        banner = f"<p><strong>Fault mode: {_e(mode.get('mode'))}</strong> (delay {_e(mode.get('delay_s'))} s)</p>"
    return (
        "<!doctype html>\n<html lang=\"vi\"><head><meta charset=\"utf-8\">"
        '<meta http-equiv="refresh" content="2">'
        "<title>114 intake (reference)</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>Tiếp nhận báo cháy 114 / 114 intake (reference server)</h1>"
        f"{banner}<p>{len(incidents)} sự cố / incidents shown, newest first. This page refreshes every 2 s.</p>"
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{rows}</tbody></table></body></html>\n"
    )

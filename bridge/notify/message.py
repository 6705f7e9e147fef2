"""What a contact reads: one SMS about one alarm, in Vietnamese, short enough for two or three parts."""

from __future__ import annotations

import time

CAUSES = {"button": "nút nhấn báo cháy", "heat": "đầu báo nhiệt", "smoke": "đầu báo khói",
          "multi": "đầu báo đa cảm biến", "panel": "tủ báo cháy"}
VN_OFFSET_S = 7 * 3600  # Vietnam is UTC+7 all year


def local_time(ts: float) -> str:
    return time.strftime("%H:%M %d/%m", time.gmtime(ts + VN_OFFSET_S))


def alarm_text(event: dict, device, facility_name: str, received_at: float, contact_index: int) -> str:
    where = facility_name
    if device is not None:
        place = ", ".join(x for x in (device.address, f"tầng {device.floor}" if device.floor else "",
                                      f"phòng {device.room}" if device.room else "") if x)
        where = f"{facility_name} ({place})" if place else facility_name
    cause = CAUSES.get(event.get("cause", ""), event.get("cause", ""))
    nth = "" if contact_index == 0 else f" Người trước chưa trả lời; bạn là liên hệ số {contact_index + 1}."
    return (f"BÁO CHÁY: {where}. {cause.capitalize()} {event.get('dev', '')} lúc {local_time(received_at)}."
            f"{nth} Trả lời tin này để xác nhận. Mã {event.get('id', '')}")

"""Stage 5, enrich: event + registry entry (+ verify result) -> bridge.report.Report.

Location: the device's GPS fix wins when it is fresh and accurate enough; otherwise the coordinates
installed in the registry; the device's own `fixed` coordinates only when the registry has none.
The site carries the address's official unit codes; the facility record, looked up by the caller,
goes in as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..report import Facility, Location, Report, Site

if TYPE_CHECKING:  # only its shape: the registry module opens the database
    from ..registry import Device


@dataclass(frozen=True)
class LocationPolicy:
    gps_max_age_s: float = 60.0
    gps_max_acc_m: float = 50.0


def choose_location(loc: dict, device: Device, policy: LocationPolicy) -> Location:
    if loc.get("src") == "gps" and loc["age"] <= policy.gps_max_age_s and loc["acc"] <= policy.gps_max_acc_m:
        return Location(float(loc["lat"]), float(loc["lon"]), float(loc["acc"]), "gps", int(loc["age"]))
    if device.lat is not None and device.lon is not None:
        return Location(device.lat, device.lon, float(device.acc if device.acc is not None else 0.0), "fixed", 0)
    return Location(float(loc["lat"]), float(loc["lon"]), float(loc["acc"]), "fixed", int(loc["age"]))


def site_of(device: Device) -> Site:
    return Site(
        building=device.building,
        address=device.address,
        floor=device.floor,
        room=device.room,
        contact_phone=device.contact_phone,
        province=device.province,
        ward=device.ward,
        ward_code=device.ward_code,
        province_code=device.province_code,
        dc09_account=device.dc09_account,
        dc09_receiver=device.dc09_receiver,
        dc09_line=device.dc09_line,
    )


def build_report(
    event: dict,
    device: Device,
    received_at: float,
    incident_key: str,
    confidence: float,
    reasons: tuple[str, ...],
    policy: LocationPolicy,
    incident_id: str | None = None,
    late: str | None = None,
    facility: Facility | None = None,
) -> Report:
    references = incident_key if incident_key != event["id"] else None
    ts = event.get("ts")
    return Report(
        event_id=event["id"],
        device_id=event["dev"],
        board=device.board,
        type=event["type"],
        cause=event["cause"],
        incident_key=incident_key,
        references=references,
        occurred_at=float(ts) if ts else received_at,
        received_at=received_at,
        location=choose_location(event["loc"], device, policy),
        site=site_of(device),
        confidence=confidence,
        reasons=reasons,
        readings=dict(event.get("data") or {}),
        incident_id=incident_id if references else None,
        late=late,
        facility=facility,
    )

"""What the pipeline hands to a sink: one enriched, verified event, independent of any wire format.

Every sink (114 JSON intake, CAP 1.2, SIA DC-09) turns a Report into its own language; none of them
sees MQTT or the device frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EventType = str  # one of firmware.protocol.TYPES


@dataclass(frozen=True)
class Location:
    lat: float
    lon: float
    accuracy_m: float
    source: str  # one of firmware.protocol.LOC_SOURCES
    fix_age_s: int = 0


@dataclass(frozen=True)
class Site:
    """Where the device is installed, from the registry."""

    building: str
    address: str
    floor: str = ""
    room: str = ""
    contact_phone: str = ""
    province: str = ""
    # the 2025 ward or commune and the official unit codes (bridge/address.py); '' when not recognised
    ward: str = ""
    ward_code: str = ""
    province_code: str = ""
    # SIA DC-09 routing for an alarm receiving centre (optional per site)
    dc09_account: str = ""
    dc09_receiver: str = ""
    dc09_line: str = ""


@dataclass(frozen=True)
class Facility:
    """The facility a device belongs to (its `building`), as its operator recorded it: what 114 needs to
    size a response (bridge/facilities.py; the codes in bridge/facility_types.py). None: not recorded."""

    id: str
    name: str = ""
    type: str = ""  # a code of facility_types.FACILITY_TYPES, '' when not recorded
    floors_above: int | None = None
    floors_below: int | None = None
    occupancy_day: int | None = None  # people there at a typical day time
    occupancy_night: int | None = None
    hazards: tuple[str, ...] = ()  # codes of facility_types.HAZARDS
    hazards_other: str = ""
    water_sources: tuple[str, ...] = ()  # nearest first, as written
    contacts: tuple[tuple[str, str], ...] = ()  # (name, phone), in calling order


@dataclass(frozen=True)
class Report:
    event_id: str  # the device's event id (idempotency key for every sink)
    device_id: str
    board: str
    type: EventType
    cause: str  # button, heat, smoke, multi; fault causes; selftest
    incident_key: str  # event id of the incident's first event; updates share it
    references: str | None  # for cancel/restore/escalation: the event id they update
    occurred_at: float  # Unix seconds: device clock when synchronised, else bridge receipt time
    received_at: float  # Unix seconds at the bridge
    location: Location
    site: Site
    confidence: float  # 0..1, from the verify stage
    reasons: tuple[str, ...] = ()
    readings: dict = field(default_factory=dict)
    incident_id: str | None = None  # the 114 incident id once the intake has given one
    late: str | None = None  # why it arrives out of order (stored after a later event of its device)
    facility: Facility | None = None  # its building's facility record, when one is recorded

    @property
    def is_update(self) -> bool:
        return self.references is not None


@dataclass(frozen=True)
class Outcome:
    """A sink's answer for one report."""

    status: Literal["accepted", "retry", "refused"]
    ref: str | None = None  # the receiver's id for it (114 incident id, CAP identifier, DC-09 seq)
    detail: str = ""

    @classmethod
    def accepted(cls, ref: str | None = None, detail: str = "") -> Outcome:
        return cls("accepted", ref, detail)

    @classmethod
    def retry(cls, detail: str) -> Outcome:
        return cls("retry", None, detail)

    @classmethod
    def refused(cls, detail: str) -> Outcome:
        return cls("refused", None, detail)

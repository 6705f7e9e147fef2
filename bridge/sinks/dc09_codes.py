"""Which alarm-industry code each report becomes: Ademco Contact ID (SIA DC-05) and SIA DC-03 event codes.

The same table is printed in docs/integration.md; change both together. Sources: SIA DC-05 (Contact ID
event list) and SIA DC-03 (two-letter codes), cross-checked against the Contact ID -> SIA table that
pysiaalarm (the receiver Home Assistant uses) ships, so an ADM-CID message and its SIA-DCS twin decode
to the same meaning at a receiver.
"""

from __future__ import annotations

from typing import NamedTuple

from ..report import Report

NEW_EVENT = 1  # Contact ID qualifier: new event / opening
RESTORE = 3  # Contact ID qualifier: restore / closing


class Code(NamedTuple):
    """One event in both languages. `restore_sia` is the SIA code for the restore of this event."""

    cid: int  # Contact ID event code (3 digits)
    sia: str  # SIA DC-03 code for the new event
    restore_sia: str  # SIA DC-03 code for its restore
    label: str  # English name, for logs and docs


# alarm causes (protocol: alarm/prealarm `cause`)
CALL_POINT_FIRE = Code(115, "FA", "FH", "manual call point (fire)")
CALL_POINT_PANIC = Code(120, "PA", "PH", "panic button")
HEAT = Code(114, "KA", "KH", "heat")
SMOKE = Code(111, "FA", "FH", "smoke")
MULTI = Code(110, "FA", "FH", "fire (several criteria)")
# the building's fire alarm panel in alarm, through its transmitter: Contact ID 110 "fire alarm"
PANEL = Code(110, "FA", "FH", "fire alarm panel")
# a pre-alarm: one criterion, not yet confirmed. Contact ID 118 "near alarm"; SIA FG "unverified event - fire"
PREALARM = Code(118, "FG", "FH", "pre-alarm (unconfirmed)")
# faults (protocol: fault/restore `cause`)
FIRE_TROUBLE = Code(373, "FT", "FJ", "fire trouble (device fault)")
# 302 is "low system battery"; its SIA twin is YT (XT/384 is a wireless transmitter's battery in a panel
# system). Our device is itself the communicator, so 302/YT is the consistent pair.
LOW_BATTERY = Code(302, "YT", "YR", "low battery")
TAMPER = Code(137, "TA", "TR", "tamper")
TEST = Code(602, "RP", "RP", "periodic test")
# a false press cancelled by the occupant within the cancel window
CANCEL_FIRE = Code(406, "FC", "FC", "fire alarm cancelled")
CANCEL_PANIC = Code(406, "OC", "OC", "alarm cancelled")

ALARM_CAUSES = {"heat": HEAT, "smoke": SMOKE, "multi": MULTI, "panel": PANEL}
# Every other fault cause is fire trouble, the panel's (panel-fault, line-open, line-short) included: a
# receiving centre must treat a transmitter that can no longer see its panel as unable to report a fire.
FAULT_CAUSES = {"battery": LOW_BATTERY, "tamper": TAMPER}


class Event(NamedTuple):
    """What goes on the wire for one report."""

    qualifier: int  # Contact ID qualifier: 1 new, 3 restore
    code: Code

    @property
    def sia(self) -> str:
        return self.code.restore_sia if self.qualifier == RESTORE else self.code.sia

    @property
    def cid(self) -> str:
        """Contact ID `QEEE`: qualifier and event code."""
        return f"{self.qualifier}{self.code.cid:03d}"


def alarm_code(cause: str, panic: bool = False) -> Code:
    if cause == "button":
        return CALL_POINT_PANIC if panic else CALL_POINT_FIRE
    return ALARM_CAUSES.get(cause, MULTI)


def event_for(report: Report, panic: bool = False) -> Event:
    """The event for a report. `panic`: this site's button is a panic button, not a fire call point."""
    t, cause = report.type, report.cause
    if t == "alarm":
        return Event(NEW_EVENT, alarm_code(cause, panic))
    if t == "prealarm":
        return Event(NEW_EVENT, PREALARM)
    if t == "cancel":
        return Event(NEW_EVENT, CANCEL_PANIC if panic and cause == "button" else CANCEL_FIRE)
    if t == "test":
        return Event(NEW_EVENT, TEST)
    if t == "fault":
        return Event(NEW_EVENT, FAULT_CAUSES.get(cause, FIRE_TROUBLE))
    if t == "restore":
        if cause in ALARM_CAUSES or cause == "button":
            return Event(RESTORE, alarm_code(cause, panic))
        return Event(RESTORE, FAULT_CAUSES.get(cause, FIRE_TROUBLE))
    raise ValueError(f"no DC-09 event for report type {t!r}")


def table_rows() -> list[tuple[str, str, str, str, str]]:
    """(what, Contact ID new, SIA new, Contact ID restore, SIA restore) for the docs table."""
    rows = []
    for what, code in [
        ("alarm, cause button (fire call point)", CALL_POINT_FIRE),
        ("alarm, cause button (site option: panic button)", CALL_POINT_PANIC),
        ("alarm, cause heat", HEAT),
        ("alarm, cause smoke", SMOKE),
        ("alarm, cause multi", MULTI),
        ("alarm, cause panel (the building's fire alarm panel)", PANEL),
        ("prealarm (any cause; off by default)", PREALARM),
        ("fault, cause battery", LOW_BATTERY),
        ("fault, cause tamper", TAMPER),
        ("fault, any other cause", FIRE_TROUBLE),
        ("test", TEST),
    ]:
        rows.append((what, f"1 {code.cid:03d}", code.sia, f"3 {code.cid:03d}", code.restore_sia))
    rows.append(("cancel (fire call point / panic button)", "1 406", "FC / OC", "-", "-"))
    return rows

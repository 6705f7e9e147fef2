"""An alarm's way through the bridge, in order. Each step is one function of bridge/stages/ (pure).

On the MQTT thread (bridge/service.py hands every event publish to `admit`):
  1. split       stages/parse.py         topic and payload -> Frame (device id, body bytes, signature)
  2. signature   stages/authenticate.py  the device is registered and its HMAC over the body verifies
  3. parse       stages/parse.py         the authentic body is a valid event (docs/protocol.md section 4)
  4. device      stages/authenticate.py  the body names the topic's device
In the store writer (bridge/workers/store_writer.py), one transaction per batch:
  5. classify    stages/authenticate.py  new, late, duplicate or conflict; new and late events are stored with one outbox
                                         row per sink, then acked `stored` (stages/ack.py)
In each delivery worker (bridge/workers/delivery.py), per outbox row, by `report_for`:
  6. verify      stages/verify.py        confidence and reasons, from the facts around the event
  7. enrich      stages/enrich.py        location, site and facility -> the Report every sink takes
  8. deliver     stages/deliver.py       what the sink's outcome means: done, retry, failed
  9. ack         stages/ack.py           `forwarded`, `accepted` or `failed` to the device
"""

from __future__ import annotations

from firmware import protocol

from .registry import Device
from .report import Facility, Report
from .stages import authenticate, enrich, parse, verify
from .stages.parse import Frame


def admit(topic: str, payload: bytes, key_lookup, max_payload: int = protocol.MAX_PAYLOAD) -> tuple[Frame, dict]:
    """An event publish -> (Frame, event dict), ready to store; protocol.Refused with the reason when not.

    key_lookup(dev_id) -> the device's 32-byte key, or None when it is not registered.
    """
    frame = parse.split_frame(topic, payload, max_payload, kinds=("event",))
    authenticate.check_signature(frame, key_lookup)
    event = parse.parse_event(frame.body)
    authenticate.check_device(frame, event)
    return frame, event


def report_for(event: dict, device: Device, ctx: verify.Context, received_at: float, incident_key: str,
               location: enrich.LocationPolicy, incident_id: str | None = None,
               late: str | None = None, facility: Facility | None = None) -> Report:
    """A stored event -> the Report for a sink: verify, then enrich."""
    confidence, reasons = verify.assess(event, ctx)
    return enrich.build_report(event, device, received_at, incident_key, confidence, reasons, location,
                               incident_id=incident_id, late=late, facility=facility)

"""Sinks into the 114 pipeline. A sink is any object with `name` and `send(report) -> Outcome`.

`send` is called from the sink's own delivery worker (one at a time per sink), may block on the
network, and must be idempotent by `report.event_id`: the outbox retries after crashes and timeouts.
A sink may also have `wants(type, cause) -> bool`: events it does not want are never queued for it
(the 114 intake takes no device faults), so they can neither fail there nor raise operator faults.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from ..report import Outcome, Report

# sink type in the bridge config -> "module:Class"; each class is built as Class(name, **options)
SINK_TYPES = {
    "intake-json": "bridge.sinks.intake_json:IntakeJsonSink",
    "cap": "bridge.sinks.cap:CapSink",
    "dc09": "bridge.sinks.dc09:Dc09Sink",
}


class Sink(Protocol):
    name: str

    def send(self, report: Report) -> Outcome: ...

    def close(self) -> None: ...


class SinkConfigError(ValueError):
    pass


def build_sink(name: str, type: str, **options) -> Sink:
    try:
        target = SINK_TYPES[type]
    except KeyError:
        raise SinkConfigError(f"sink {name!r}: unknown type {type!r} (known: {', '.join(SINK_TYPES)})") from None
    mod, cls = target.split(":")
    try:
        return getattr(importlib.import_module(mod), cls)(name, **options)
    except TypeError as e:
        raise SinkConfigError(f"sink {name!r} ({type}): {e}") from None

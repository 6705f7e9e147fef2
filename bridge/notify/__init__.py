"""Notifiers: how the bridge reaches a facility's contacts when an alarm is stored (SMS today; voice or
app push beside it later). A notifier sends one message to one number and reports back, from its own
thread, the receipts and replies it hears; what to send to whom, and when to go on to the next
contact, is bridge/workers/callouts.py's.

A notifier class takes its options as keyword arguments (the `notify` section of the config) and has:
  name                      str
  start(on_event)           connect; on_event(Receipt | Reply) is called from the notifier's thread
  send(to, text) -> str     submit one message; returns its id, raises NotifyError when it cannot
  close()
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

NOTIFIER_TYPES = {"smpp": "bridge.notify.smpp:SmppNotifier"}


class NotifyError(Exception):
    pass


@dataclass(frozen=True)
class Receipt:
    """The network's word on a message: delivered to the handset or not."""

    msg_id: str
    delivered: bool
    detail: str = ""


@dataclass(frozen=True)
class Reply:
    """A message from a contact's handset (the acknowledgement)."""

    sender: str
    text: str


def build_notifier(type_: str, **options):
    target = NOTIFIER_TYPES.get(type_)
    if target is None:
        raise ValueError(f"unknown notifier type {type_!r} (known: {', '.join(sorted(NOTIFIER_TYPES))})")
    mod, cls = target.split(":")
    return getattr(importlib.import_module(mod), cls)(**options)

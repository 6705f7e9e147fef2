"""The broker's access rules, as installed in production (`baochay-provision broker-config`,
`register`) and by the local stack: each device writes only its own topics and reads only its own
acks and commands (user name = device id, `%u`); a bridge reads every device and writes acks and
commands; an observer only reads. The topics come from the contract (firmware/protocol_host.py).
"""

from __future__ import annotations

from firmware import protocol_host

DEVICE_ACL = "".join(line + "\n" for line in protocol_host.acl_device())


def bridge_acl(user: str) -> str:
    return f"user {user}\n" + "".join(line + "\n" for line in protocol_host.acl_bridge())


def observer_acl(user: str) -> str:
    """Read-only view of all device traffic (the demo's live feed, monitoring)."""
    return f"user {user}\n" + "".join(line + "\n" for line in protocol_host.acl_watcher())

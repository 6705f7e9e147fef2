"""Load for the benchmarks: the simulated devices (tests/support/simdevice.py, shared with the bridge
tests) and the bare relay the throughput benchmark compares the bridge against.

    python -m bench.loadgen relay --port PORT --user U --password P

The relay subscribes to every device's events and republishes each payload to its sender's ack topic.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

# The simulated devices are test support (tests/support/); the benchmarks run outside pytest, so
# tests/ goes on the path here as pytest's `pythonpath` puts it there for the tests.
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.simdevice import AsyncDevice, MqttConnection, SimDevice  # noqa: E402

from firmware import protocol_host as protocol  # noqa: E402

__all__ = ["AsyncDevice", "MqttConnection", "SimDevice", "relay"]


async def relay(host: str, port: int, user: str, password: str, ready: Callable[[], None] | None = None) -> None:
    conn: MqttConnection

    def on_publish(topic: str, payload: bytes) -> None:
        dev, _kind = protocol.split_topic(topic)
        conn.publish_nowait(protocol.topic(dev, "ack"), payload, qos=1)

    conn = MqttConnection(host, port, f"relay-{user}", user, password, keepalive=60, clean=True,
                          on_publish=on_publish)
    await conn.connect()
    await conn.subscribe([(protocol.every("event"), 1)])
    if ready:
        ready()
    await conn.closed.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("relay", help="republish every event to its sender's ack topic")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    args = p.parse_args(argv)
    if args.verb == "relay":
        try:
            asyncio.run(relay(args.host, args.port, args.user, args.password,
                              ready=lambda: print("relay ready", flush=True)))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load for the benchmarks: the simulated devices (tests/support/simdevice.py, shared with the bridge
tests), the bare relay the throughput benchmark compares the bridge against, and a flooding device.

    python -m bench.loadgen relay --port PORT --user U --password P
    python -m bench.loadgen flood --port PORT --dev ID --password P --seconds S

The relay subscribes to every device's events and republishes each payload to its sender's ack topic.
The flood connects as one device and publishes, as fast as its TCP connection takes them, a mix of
junk on its event topic, well-formed telemetry, malformed status and badly signed events, QoS 0 and 1;
it prints how many packets it sent and how fast.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The simulated devices are test support (tests/support/); the benchmarks run outside pytest, so
# tests/ goes on the path here as pytest's `pythonpath` puts it there for the tests.
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.simdevice import AsyncDevice, MqttConnection, SimDevice  # noqa: E402

from firmware import mqtt_codec as mc  # noqa: E402
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


def flood_packets(dev: str, pids) -> bytes:
    """One round of the flood: what a broken or hostile device sends, every kind of it."""
    ev, tel, st = protocol.topic(dev, "event"), protocol.topic(dev, "telemetry"), protocol.topic(dev, "status")
    telemetry = json.dumps({"v": 1, "dev": dev, "up": 1000, "ts": int(time.time()), "boot": 1, "heap_free": 60000,
                            "rssi": -60, "outbox": 0}).encode()
    forged = protocol.dumps(protocol.event_body(dev, 7, "alarm", "button", int(time.time()), 1000, 1,
                                                {"lat": 21.0, "lon": 105.8, "acc": 10, "src": "fixed", "age": 0}))
    out = [
        mc.publish(ev, b"\x00junk" * 20, 0),
        mc.publish(tel, telemetry, 0),
        mc.publish(st, b"{not json", 0),
        mc.publish(ev, forged + b"\n" + b"0" * 64, 1, pid=next(pids)),  # a signature that does not verify
        mc.publish(tel, telemetry, 1, pid=next(pids)),
        mc.publish(ev, b"{}", 0),
    ]
    return b"".join(bytes(x) for x in out)


async def flood(host: str, port: int, dev: str, password: str, seconds: float, mbit: float = 0.0) -> None:
    """mbit: the device's link, in Mbit/s (0: as fast as loopback takes it)."""
    conn = MqttConnection(host, port, dev, dev, password, keepalive=60, clean=True)
    await conn.connect()
    print("flood ready", flush=True)
    pids = itertools.cycle(range(1, 65536))
    assert conn.writer is not None
    sent = nbytes = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds and not conn.closed.is_set():
        blob = b"".join(flood_packets(dev, pids) for _ in range(10))
        conn.writer.write(blob)
        await conn.writer.drain()  # as fast as the connection takes it, no faster
        sent += 60
        nbytes += len(blob)
        if mbit:
            ahead = nbytes * 8 / (mbit * 1e6) - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)  # the link's rate, not a wait for an event
    dt = time.monotonic() - t0
    print(f"flood sent {sent} packets in {dt:.1f} s: {sent / dt:,.0f} /s, {nbytes * 8 / dt / 1e6:.1f} Mbit/s",
          flush=True)
    await conn.disconnect()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("relay", help="republish every event to its sender's ack topic")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--user", required=True)
    r.add_argument("--password", required=True)
    f = sub.add_parser("flood", help="flood the broker as one device, for --seconds")
    f.add_argument("--host", default="127.0.0.1")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--dev", required=True)
    f.add_argument("--password", required=True)
    f.add_argument("--seconds", type=float, default=10.0)
    f.add_argument("--mbit", type=float, default=0.0, help="the link's rate in Mbit/s (default: unpaced)")
    args = p.parse_args(argv)
    if args.verb == "flood":
        asyncio.run(flood(args.host, args.port, args.dev, args.password, args.seconds, args.mbit))
        return 0
    if args.verb == "relay":
        try:
            asyncio.run(relay(args.host, args.port, args.user, args.password,
                              ready=lambda: print("relay ready", flush=True)))
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

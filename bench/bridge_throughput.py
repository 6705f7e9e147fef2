"""Bridge throughput and storm latency, beside the broker's bare relay rate measured the same way.

    python -m bench.bridge_throughput [--devices 1000] [--per-device 4] [--storm 1000]

1. Relay: the load generator's devices publish signed alarms; a plain subscriber republishes each one
   to the sender's ack topic. Rate = alarms answered per second: what broker + load generator manage.
2. Bridge: the same load against the bridge (subprocess, own database); rate = alarms acked `stored`
   per second (stored durably first), and the ratio to the relay rate.
3. Storm: every device sends one alarm at once; publish -> `accepted` p50/p95/p99, through an in-bench
   sink that accepts at once (so the figure is the bridge's own share of the path).
Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.loadgen import AsyncDevice
from bridge.registry import Registry
from bridge.report import Outcome, Report
from stack.mosquitto import Mosquitto

REPO = Path(__file__).resolve().parents[1]


class BenchSink:
    """Accepts everything at once; the incident id is derived from the event id (idempotent)."""

    def __init__(self, name: str, **_options):
        self.name = name

    def send(self, report: Report) -> Outcome:
        return Outcome.accepted("INC-" + report.event_id)

    def close(self) -> None:
        pass


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def connect_all(devs: list[AsyncDevice], chunk: int = 100) -> None:
    for i in range(0, len(devs), chunk):
        await asyncio.gather(*(d.connect(resend=False) for d in devs[i:i + chunk]))


async def close_all(devs: list[AsyncDevice]) -> None:
    await asyncio.gather(*(d.close() for d in devs), return_exceptions=True)


async def blast(devs: list[AsyncDevice], per_device: int, done, timeout: float = 120.0) -> tuple[int, float, float]:
    """Every device publishes `per_device` alarms back to back; returns (count, t_first, t_done)."""
    frames = [(d, *d.make_event("alarm", "button")) for _ in range(per_device) for d in devs]
    t0 = time.monotonic()
    for d, eid, frame in frames:
        d.send_frame(eid, frame, keep=False)
    total = len(frames)
    deadline = t0 + timeout
    while done() < total and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return done(), t0, time.monotonic()


def fleet(n: int) -> dict[str, tuple[str, str]]:
    return {f"bench-{i:05d}": (secrets.token_hex(8), secrets.token_hex(32)) for i in range(n)}


def make_devices(creds, broker, raw: bool) -> list[AsyncDevice]:
    return [AsyncDevice(dev, bytes.fromhex(key), broker.host, broker.port, pw, keepalive=120, raw_acks=raw)
            for dev, (pw, key) in creds.items()]


async def relay_phase(creds, broker, args) -> float:
    relay = subprocess.Popen([sys.executable, "-m", "bench.loadgen", "relay", "--port", str(broker.port),
                              "--user", "relay", "--password", "relay-pw"], cwd=REPO, env=_env(),
                             stdout=subprocess.PIPE, text=True)
    try:
        relay.stdout.readline()  # "relay ready"
        devs = make_devices(creds, broker, raw=True)
        some = devs[: args.throughput_devices]
        await connect_all(some)
        n, t0, t1 = await blast(some, args.per_device, lambda: sum(len(d.raw) for d in some))
        rate = n / max(1e-9, max(r[2] for d in some for r in d.raw) - t0) if n else 0.0
        await close_all(some)
        print(f"bare relay:  {n} alarms answered, {rate:,.0f} /s")
        return rate
    finally:
        relay.terminate()
        relay.wait(10)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_bridge(workdir: Path, broker, creds) -> subprocess.Popen:
    dbp = workdir / "bridge.db"
    Registry(dbp).upsert_many({"id": d, "key": k, "building": f"B{i // 50}", "address": "bench", "lat": 21.0,
                               "lon": 105.8, "acc": 10} for i, (d, (_pw, k)) in enumerate(creds.items()))
    cfg = {"bridge_id": "bench", "db": str(dbp), "log_level": "warning",
           "mqtt": {"host": broker.host, "port": broker.port, "user": "bridge", "password": "bridge-pw"},
           "sinks": [{"name": "bench", "type": "bench"}], "sink_types": {"bench": "bench.bridge_throughput:BenchSink"},
           "supervision": {"mains_s": 3600}}
    (workdir / "bridge.yaml").write_text(yaml.safe_dump(cfg))
    log = open(workdir / "bridge.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(workdir / "bridge.yaml")],
                            cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while b"bridge ready" not in (workdir / "bridge.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("bridge did not start:\n" + (workdir / "bridge.log").read_text()[-2000:])
        time.sleep(0.05)
    return proc


async def bridge_phase(creds, broker, args, relay_rate: float) -> None:
    devs = make_devices(creds, broker, raw=False)
    some = devs[: args.throughput_devices]
    await connect_all(some)

    def stored():
        return sum(1 for d in some for (_e, s) in d.stage_at if s == "stored")

    n, t0, _t1 = await blast(some, args.per_device, stored)
    last = max((t for d in some for (_e, s), t in d.stage_at.items() if s == "stored"), default=t0)
    rate = n / max(1e-9, last - t0) if n else 0.0
    ratio = rate / relay_rate if relay_rate else float("nan")
    print(f"bridge:      {n} alarms stored+acked, {rate:,.0f} /s  ({ratio:.0%} of the bare relay; "
          f"target >= 2,000 /s and >= 50 %)")
    # let the throughput phase drain before the storm
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for d in some for (_e, s) in d.stage_at if s == "accepted") < n:
        await asyncio.sleep(0.05)
    await connect_all(devs[args.throughput_devices:])
    storm = devs[: args.storm]
    print(f"storm:       {len(storm)} devices connected, one alarm each, all at once")
    sent = {}
    for d in storm:
        eid, frame = d.make_event("alarm", "button")
        d.send_frame(eid, frame, keep=False)
        sent[eid] = d
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for e, d in sent.items() if (e, "accepted") in d.stage_at) < len(sent):
        await asyncio.sleep(0.005)
    lat = [(d.stage_at[(e, "accepted")] - d.sent_at[e]) * 1000 for e, d in sent.items() if (e, "accepted") in d.stage_at]
    st = [(d.stage_at[(e, "stored")] - d.sent_at[e]) * 1000 for e, d in sent.items() if (e, "stored") in d.stage_at]
    print(f"storm:       {len(lat)}/{len(sent)} accepted; publish -> accepted p50 {pct(lat, 50):.0f} ms, "
          f"p95 {pct(lat, 95):.0f} ms, p99 {pct(lat, 99):.0f} ms (target p99 <= 250 ms)")
    print(f"             publish -> stored p50 {pct(st, 50):.0f} ms, p99 {pct(st, 99):.0f} ms")
    await close_all(devs)


async def amain(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="baochay-bench-"))
    try:
        creds = fleet(max(args.storm, args.throughput_devices))
        print(f"setting up a broker with {len(creds)} device users ...", flush=True)
        broker = Mosquitto(workdir / "broker", users={**{d: pw for d, (pw, _k) in creds.items()},
                                                      "bridge": "bridge-pw", "relay": "relay-pw"},
                           bridge_users=("bridge", "relay"))
        broker.start()
        try:
            print(f"load: {args.throughput_devices} devices x {args.per_device} alarms, QoS 1, signed, "
                  f"{os.cpu_count()} cores shared by broker, bridge and load generator")
            relay_rate = await relay_phase(creds, broker, args)
            bridge = start_bridge(workdir, broker, creds)
            try:
                await bridge_phase(creds, broker, args, relay_rate)
            finally:
                bridge.terminate()
                bridge.wait(20)
        finally:
            broker.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bridge_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--throughput-devices", type=int, default=200)
    p.add_argument("--per-device", type=int, default=20)
    p.add_argument("--storm", type=int, default=1000)
    args = p.parse_args(argv)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

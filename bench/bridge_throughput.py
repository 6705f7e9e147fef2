"""Bridge throughput and storm latency, beside the broker's bare relay rate measured the same way.

    python -m bench.bridge_throughput [--throughput-devices 200] [--per-device 20] [--storm 1000]
                                      [--profile FILE]

1. Relay: the load generator's devices publish signed alarms; a plain subscriber republishes each one
   to the sender's ack topic. Rate = alarms answered per second: what broker + load generator manage.
2. Bridge: the same load against the bridge (subprocess, own database); rate = alarms acked `stored`
   per second (stored durably first), and the ratio to the relay rate.
3. Storm: every device sends one alarm at once; publish -> `accepted` p50/p95/p99, through an in-bench
   sink that accepts at once (so the figure is the bridge's own share of the path).
In every phase the load generator only records acks as they arrive and verifies their signatures
afterwards, so it spends the same effort per ack against the relay and against the bridge. Each phase
also prints the CPU seconds used by the broker, the relay or bridge, and the generator (this process).
Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen import AsyncDevice
from bridge.registry import Registry
from bridge.report import Outcome, Report
from stack.bridge import Bridge
from stack.mosquitto import Mosquitto
from stack.procs import Process


class BenchSink:
    """Accepts everything at once; the incident id is derived from the event id (idempotent)."""

    def __init__(self, name: str, **_options):
        self.name = name

    def send(self, report: Report) -> Outcome:
        return Outcome.accepted("INC-" + report.event_id)

    def close(self) -> None:
        pass


def start_profiler(out: str | None, pid: int) -> Process | None:
    """py-spy (pip install py-spy) sampling the bridge, written as collapsed stacks to `out`."""
    if not out:
        return None
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not exe:
        print("--profile needs py-spy: pip install py-spy")
        return None
    prof = Process([exe, "record", "-r", "200", "-t", "-f", "raw", "-o", out, "--pid", str(pid)], name="py-spy")
    prof.start()
    time.sleep(1)  # py-spy prints nothing when it is attached: give it a moment before the load
    return prof


def stop_profiler(prof: Process | None) -> None:
    if prof is not None:
        prof.signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        prof.wait(30)


class CpuMeter:
    """CPU seconds used by the bench's own process (load generator), the broker and the bridge."""

    def __init__(self, **pids: int):
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def _proc(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def read(self) -> dict[str, float]:
        now = {name: self._proc(pid) for name, pid in self.pids.items()}
        t = os.times()
        now["generator"] = t.user + t.system
        now["wall"] = time.monotonic()
        return now

    @staticmethod
    def show(before: dict, after: dict) -> str:
        wall = after["wall"] - before["wall"]
        parts = [f"{k} {after[k] - before[k]:.2f}" for k in before if k != "wall"]
        return f"cpu seconds over {wall:.2f} s wall: " + ", ".join(parts)


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
    relay = Process([sys.executable, "-m", "bench.loadgen", "relay", "--port", str(broker.port),
                     "--user", "relay", "--password", "relay-pw"], name="relay", ready="relay ready")
    relay.start()
    try:
        devs = make_devices(creds, broker, raw=True)
        some = devs[: args.throughput_devices]
        await connect_all(some)
        cpu = CpuMeter(broker=broker.proc.pid, relay=relay.pid)
        before = cpu.read()
        n, t0, t1 = await blast(some, args.per_device, lambda: sum(len(d.raw) for d in some))
        after = cpu.read()
        rate = n / max(1e-9, max(r[2] for d in some for r in d.raw) - t0) if n else 0.0
        await close_all(some)
        print(f"bare relay:  {n} alarms answered, {rate:,.0f} /s")
        print("             " + cpu.show(before, after))
        return rate
    finally:
        relay.stop(10)


def start_bridge(workdir: Path, broker, creds, index: int = 0, shared: bool = False) -> Bridge:
    """One bridge process; with `shared`, one of several on one database behind a shared subscription."""
    dbp = workdir / "bridge.db"
    if index == 0:
        Registry(dbp).upsert_many({"id": d, "key": k, "building": f"B{i // 50}", "address": "bench", "lat": 21.0,
                                   "lon": 105.8, "acc": 10} for i, (d, (_pw, k)) in enumerate(creds.items()))
    mq = {"host": broker.host, "port": broker.port, "user": "bridge", "password": "bridge-pw"}
    if shared:
        mq.update(shared_group="bench", session_expiry_s=30)
    cfg = {"bridge_id": f"bench-{index}", "db": str(dbp), "log_level": "warning", "mqtt": mq,
           "sinks": [{"name": "bench", "type": "bench"}], "sink_types": {"bench": "bench.bridge_throughput:BenchSink"},
           "supervision": {"mains_s": 3600}}
    return Bridge(workdir, cfg, name=f"bridge-{index}").start()


async def bridge_phase(creds, broker, args, relay_rate: float, cpu: CpuMeter) -> None:
    # acks are kept raw while the load runs and verified afterwards, as the relay phase does
    devs = make_devices(creds, broker, raw=True)
    some = devs[: args.throughput_devices]
    await connect_all(some)
    before = cpu.read()
    n, t0, _t1 = await blast(some, args.per_device, lambda: sum(d.raw_stored for d in some))
    for d in some:
        d.verify_raw()
    stored_at = [t for d in some for (_e, s), t in d.stage_at.items() if s == "stored"]
    rate = len(stored_at) / max(1e-9, max(stored_at, default=t0) - t0) if n else 0.0
    ratio = rate / relay_rate if relay_rate else float("nan")
    print(f"bridge:      {len(stored_at)} alarms stored+acked (verified), {rate:,.0f} /s  ({ratio:.0%} of the bare "
          f"relay; target >= 2,000 /s and >= 50 %)")
    # let the throughput phase drain before the storm
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(d.raw_accepted for d in some) < n:
        await asyncio.sleep(0.05)
    print("             " + cpu.show(before, cpu.read()))
    for d in some:
        d.verify_raw()
    await connect_all(devs[args.throughput_devices:])
    storm = devs[: args.storm]
    print(f"storm:       {len(storm)} devices connected, one alarm each, all at once")
    sent = {}
    frames = [(d, *d.make_event("alarm", "button")) for d in storm]
    accepted_before = sum(d.raw_accepted for d in storm)
    n_storm = accepted_before + len(frames)
    before = cpu.read()
    for d, eid, frame in frames:
        d.send_frame(eid, frame, keep=False)
        sent[eid] = d
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(d.raw_accepted for d in storm) < n_storm:
        await asyncio.sleep(0.005)
    after = cpu.read()
    for d in storm:
        d.verify_raw()
    lat = [(d.stage_at[(e, "accepted")] - d.sent_at[e]) * 1000 for e, d in sent.items() if (e, "accepted") in d.stage_at]
    st = [(d.stage_at[(e, "stored")] - d.sent_at[e]) * 1000 for e, d in sent.items() if (e, "stored") in d.stage_at]
    print(f"storm:       {len(lat)}/{len(sent)} accepted; publish -> accepted p50 {pct(lat, 50):.0f} ms, "
          f"p95 {pct(lat, 95):.0f} ms, p99 {pct(lat, 99):.0f} ms (target p99 <= 250 ms)")
    print(f"             publish -> stored p50 {pct(st, 50):.0f} ms, p95 {pct(st, 95):.0f} ms, "
          f"p99 {pct(st, 99):.0f} ms")
    print("             " + cpu.show(before, after))
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
            bridges = [start_bridge(workdir, broker, creds, i, shared=args.bridges > 1) for i in range(args.bridges)]
            prof = start_profiler(args.profile, bridges[0].pid)
            try:
                cpu = CpuMeter(broker=broker.proc.pid, **{f"bridge{i if i else ''}": b.pid for i, b in enumerate(bridges)})
                await bridge_phase(creds, broker, args, relay_rate, cpu)
            finally:
                stop_profiler(prof)
                for b in bridges:
                    b.stop(20)
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
    p.add_argument("--bridges", type=int, default=1,
                   help="bridge processes sharing one subscription and one database (default 1)")
    p.add_argument("--profile", metavar="FILE", help="sample the bridge with py-spy into FILE (collapsed stacks)")
    args = p.parse_args(argv)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

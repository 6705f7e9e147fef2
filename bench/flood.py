"""One device floods; another device's alarms are still stored at once, and none is lost.

    python -m bench.flood [--alarms 200] [--interval-ms 50] [--flood-s 0 (= as long as the alarms take)]

A real broker, the bridge (its own process and database, a sink that accepts at once) and two devices:
the flooder (its own process, bench/loadgen.py `flood`) publishes as fast as its TCP connection takes
it junk on its event topic, well-formed telemetry, malformed status and badly signed events, QoS 0 and
1; the victim sends `--alarms` signed alarms, one every `--interval-ms`. Measured first without the
flood, then during it: publish -> `stored` ack at the victim, p50/p99/max, and alarms lost (never
acked `stored`). Also printed: the flood's rate, what the bridge received and dropped over the limits,
and the CPU seconds of each process. Target: p99 <= 100 ms during the flood, none lost. Nothing is
asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bridge_throughput import CpuMeter, pct, start_profiler, stop_profiler
from bench.loadgen import AsyncDevice
from bridge.registry import Registry
from stack.bridge import Bridge
from stack.mosquitto import Mosquitto
from stack.ports import free_port
from stack.procs import Process

FLOODER, VICTIM = "bench-flood-0001", "bench-victim-0001"
# An ESP32's Wi-Fi link at its best in the air: about 20 Mbit/s of TCP (Espressif, ESP-IDF Programming
# Guide, Wi-Fi driver, "ESP32 Wi-Fi Throughput", iperf in the air in a lab).
LINK_MBIT = 20.0


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith((name + " ", name + "{")))


async def alarms(dev: AsyncDevice, n: int, interval_s: float, settle_s: float = 30.0) -> tuple[list[float], int]:
    """Send n alarms, one per interval; returns (publish -> stored in ms, how many never stored)."""
    sent = []
    for _ in range(n):
        eid, frame = dev.make_event("alarm", "button")
        dev.send_frame(eid, frame, keep=False)
        sent.append(eid)
        await asyncio.sleep(interval_s)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and any((e, "stored") not in dev.stage_at for e in sent):
        await asyncio.sleep(0.05)
    lat = [(dev.stage_at[(e, "stored")] - dev.sent_at[e]) * 1000 for e in sent if (e, "stored") in dev.stage_at]
    return lat, len(sent) - len(lat)


def line(label: str, lat: list[float], lost: int, n: int) -> str:
    return (f"{label:<14} {len(lat)}/{n} stored; publish -> stored p50 {pct(lat, 50):.1f} ms, "
            f"p99 {pct(lat, 99):.1f} ms, max {max(lat, default=float('nan')):.1f} ms; lost {lost}")


async def amain(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="baochay-flood-"))
    creds = {d: (secrets.token_hex(8), secrets.token_hex(32)) for d in (FLOODER, VICTIM)}
    broker = Mosquitto(workdir / "broker", users={**{d: pw for d, (pw, _k) in creds.items()}, "bridge": "bridge-pw"},
                       bridge_users=("bridge",))
    broker.start()
    bridge = None
    try:
        dbp = workdir / "bridge.db"
        Registry(dbp).upsert_many({"id": d, "key": k, "building": "B", "address": "bench", "lat": 21.0, "lon": 105.8,
                                   "acc": 10} for d, (_pw, k) in creds.items())
        mport = free_port()
        cfg = {"bridge_id": "flood", "db": str(dbp), "log_level": "warning",
               "mqtt": {"host": broker.host, "port": broker.port, "user": "bridge", "password": "bridge-pw"},
               "sinks": [{"name": "bench", "type": "bench"}],
               "sink_types": {"bench": "bench.bridge_throughput:BenchSink"},
               "metrics": {"host": "127.0.0.1", "port": mport}, "supervision": {"mains_s": 3600}}
        bridge = Bridge(workdir, cfg, name="bridge").start()
        pw, key = creds[VICTIM]
        victim = AsyncDevice(VICTIM, bytes.fromhex(key), broker.host, broker.port, pw, keepalive=60)
        await victim.connect(resend=False)
        interval = args.interval_ms / 1000
        print(f"flood: {args.alarms} alarms from one device, one every {args.interval_ms} ms, first alone, "
              f"then while another floods", flush=True)
        base, base_lost = await alarms(victim, args.alarms, interval)
        print(line("alone:", base, base_lost, args.alarms), flush=True)
        seconds = args.flood_s or (args.alarms * interval + 5)
        flooder = Process([sys.executable, "-m", "bench.loadgen", "flood", "--port", str(broker.port),
                           "--dev", FLOODER, "--password", creds[FLOODER][0], "--seconds", str(seconds),
                           "--mbit", str(args.mbit)],
                          name="flooder", ready="flood ready")
        cpu = CpuMeter(broker=broker.proc.pid, bridge=bridge.pid)
        before = cpu.read()
        received0 = metric(mport, "baochay_received_total")
        prof = start_profiler(args.profile, bridge.pid)
        flooder.start()
        cpu.pids["flooder"] = flooder.pid
        before["flooder"] = 0.0
        await asyncio.sleep(2.0)  # the flood is at full rate before the first alarm
        during, lost = await alarms(victim, args.alarms, interval)
        after = cpu.read()
        stop_profiler(prof)
        received = metric(mport, "baochay_received_total") - received0
        dropped = metric(mport, "baochay_dropped_total")
        flooder.wait(seconds + 30)
        said = [ln for ln in flooder.tail(200).splitlines() if ln.startswith("flood sent")]
        print(line("during flood:", during, lost, args.alarms))
        print(f"               the flood: {said[0][len('flood sent '):] if said else '(no figure)'}; the bridge "
              f"received {received:,.0f} messages meanwhile, dropped {dropped:,.0f} over the device's limits")
        p99_ratio = pct(during, 99) / pct(base, 99) if base else float("nan")
        print(f"               p99 during / alone: {p99_ratio:.1f}x (target: p99 <= 100 ms, none lost)")
        print("               " + CpuMeter.show(before, after))
        await victim.close()
    finally:
        if bridge is not None:
            bridge.stop(20)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alarms", type=int, default=200)
    p.add_argument("--interval-ms", type=float, default=50)
    p.add_argument("--flood-s", type=float, default=0)
    p.add_argument("--profile", metavar="FILE", help="sample the bridge with py-spy into FILE (collapsed stacks)")
    p.add_argument("--mbit", type=float, default=LINK_MBIT,
                   help=f"the flooding device's link in Mbit/s (default {LINK_MBIT:g}; 0: unpaced loopback)")
    asyncio.run(amain(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

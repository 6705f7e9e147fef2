"""An intake down for minutes: every alarm raised meanwhile is accepted once it returns, each exactly once.

    python -m bench.late_delivery [--boards 5] [--presses 4] [--down-s 600]

Starts the whole system (Mosquitto, the 114 reference intake, the bridge, N virtual boards running the
firmware), stops the intake process, presses every board's button `--presses` times, keeps the intake
down for `--down-s` seconds (the devices are told `failed` after 100 s, EN 54-21, and the bridge keeps
sending), then starts the intake again on the same port and database. Prints how many alarms were told
`failed`, how many were then accepted (the device's own `accepted` ack), how long after the intake's
return, and how many incidents the intake holds per alarm (exactly one each is the target). Nothing is
asserted: the figures are printed.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.bridge_throughput import pct
from bench.e2e_latency import sites
from stack.intake import Intake
from stack.run import Stack


def acks(vb, stage: str) -> dict[str, tuple[float, str | None]]:
    """event id -> (host arrival time, incident) of the board's first ack of `stage` for it."""
    out: dict[str, tuple[float, str | None]] = {}
    for m in vb.console.find("ack", stage=stage):
        out.setdefault(m.get("id"), (m.t, m.get("incident")))
    return out


def run(boards: int, presses: int, down_s: float, settle_s: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="baochay-late-"))
    stack = Stack(workdir, boards, keep_consoles=True)
    try:
        stack.up(sites(boards), watch=False)
        for vb in stack.boards:
            vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 30)
        assert stack.intake is not None
        port, intake_db, clients = stack.intake.port, stack.intake.db, stack.intake.clients
        stack.intake.stop()
        down_at = time.monotonic()
        alarms: list[str] = []
        for vb in stack.boards:
            for _ in range(presses):
                mark = vb.console.mark()
                vb.request("press", ms=50)
                alarms.append(vb.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm",
                                                  10, since=mark)["id"])
                time.sleep(0.3)
        print(f"late delivery: {len(alarms)} alarms on {boards} boards, intake down for {down_s:.0f} s", flush=True)
        time.sleep(max(0.0, down_s - (time.monotonic() - down_at)))
        failed = {e for vb in stack.boards for e in acks(vb, "failed")}
        stack.intake = Intake(intake_db, port=port, clients=clients).start()  # the bridge's token still holds
        back_at = time.monotonic()
        deadline = back_at + settle_s
        accepted: dict[str, tuple[float, str | None]] = {}
        while time.monotonic() < deadline and len(accepted) < len(alarms):
            accepted = {e: a for vb in stack.boards for e, a in acks(vb, "accepted").items() if e in alarms}
            time.sleep(0.5)
        time.sleep(5)  # a second report of any alarm would have reached the intake by now
        incidents = stack.intake.incidents()
        after = [t - back_at for t, _ in accepted.values()]
        told = {inc for _, inc in accepted.values()}
        print(f"  told failed while the intake was down   {len(failed & set(alarms))} of {len(alarms)}")
        print(f"  accepted after it returned             {len(accepted)} of {len(alarms)} "
              f"(waited up to {settle_s:.0f} s)")
        if after:
            print(f"  intake back -> accepted at the device  p50 {pct(after, 50):.1f} s, p99 {pct(after, 99):.1f} s, "
                  f"max {max(after):.1f} s (the late backoff is capped at 60 s)")
        print(f"  incidents at the intake                {len(incidents)} for {len(alarms)} alarms, "
              f"{len(told)} distinct incident ids told to the devices (target: one each, none twice)")
    finally:
        stack.down()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.late_delivery", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--boards", type=int, default=5)
    p.add_argument("--presses", type=int, default=4, help="alarms per board while the intake is down")
    p.add_argument("--down-s", type=float, default=600.0, help="how long the intake stays down (default 10 min)")
    p.add_argument("--settle-s", type=float, default=300.0, help="how long to wait for the acceptances after")
    args = p.parse_args(argv)
    run(max(1, args.boards), max(1, args.presses), max(0.0, args.down_s), args.settle_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a HIL run leaves behind under --results: a human summary (summary.md: scenarios, latency per
hop, heap) and the same as summary.json; pytest writes junit.xml next to them."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from pathlib import Path

# The hops of one alarm, as the board's console shows them (docs/protocol.md sections 9 and 10).
HOPS = (
    ("press->event", "button pressed to alarm written to flash"),
    ("event->sent", "flash to broker (PUBACK)"),
    ("sent->stored", "broker to bridge, stored durably (ack `stored`)"),
    ("stored->accepted", "bridge to the 114 intake and back (ack `accepted`)"),
    ("press->accepted", "the whole path"),
)


class Results:
    def __init__(self, board: str, rig: str):
        self.board = board
        self.rig = rig
        self.started = time.time()
        self.scenarios: list[dict] = []
        self.latency: dict[str, list[float]] = {}
        self.heap: dict[str, dict] = {}
        self.notes: list[str] = []

    def scenario(self, nodeid: str, outcome: str, seconds: float, detail: str = "") -> None:
        self.scenarios.append({"test": nodeid, "outcome": outcome, "seconds": round(seconds, 2), "detail": detail})

    def hop(self, name: str, ms: float) -> None:
        self.latency.setdefault(name, []).append(round(ms, 1))

    def alarm_path(self, times: dict[str, float]) -> None:
        """Record the hops of one alarm from the monotonic times of press, event, sent, stored, accepted."""
        order = ["press", "event", "sent", "stored", "accepted"]
        for a, b in itertools.pairwise(order):
            if a in times and b in times:
                self.hop(f"{a}->{b}", (times[b] - times[a]) * 1000)
        if "press" in times and "accepted" in times:
            self.hop("press->accepted", (times["accepted"] - times["press"]) * 1000)

    def heap_sample(self, dut: str, heap: dict) -> None:
        self.heap[dut] = {k: heap.get(k) for k in ("free", "alloc", "peak", "base", "data_peak")}

    def summary(self) -> dict:
        lat = {}
        for name, values in self.latency.items():
            v = sorted(values)
            lat[name] = {"n": len(v), "min_ms": v[0], "median_ms": round(statistics.median(v), 1), "max_ms": v[-1]}
        counts: dict[str, int] = {}
        for s in self.scenarios:
            counts[s["outcome"]] = counts.get(s["outcome"], 0) + 1
        return {"board": self.board, "rig": self.rig, "started": int(self.started),
                "seconds": round(time.time() - self.started, 1), "counts": counts, "scenarios": self.scenarios,
                "latency": lat, "heap": self.heap, "notes": self.notes}

    def markdown(self) -> str:
        s = self.summary()
        out = [f"# HIL run: board `{self.board}`, rig `{self.rig}`", "",
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}, {s['seconds']} s: "
               + ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items())), "",
               "## Scenarios", "", "| scenario | outcome | s | detail |", "|---|---|---|---|"]
        for sc in self.scenarios:
            detail = sc["detail"].replace("|", "\\|").replace("\n", " ")[:160]
            out.append(f"| {sc['test']} | {sc['outcome']} | {sc['seconds']} | {detail} |")
        out += ["", "## Latency per hop (ms, measured at the board's console)", "",
                "| hop | what | n | min | median | max |", "|---|---|---|---|---|---|"]
        for name, what in HOPS:
            if name in s["latency"]:
                h = s["latency"][name]
                out.append(f"| {name} | {what} | {h['n']} | {h['min_ms']} | {h['median_ms']} | {h['max_ms']} |")
        out += ["", "## Heap (bytes, from the `heap` command after the scenarios)", "",
                "| board | free | alloc | peak | base (code) | data peak |", "|---|---|---|---|---|---|"]
        for dut, h in self.heap.items():
            out.append(f"| {dut} | {h['free']} | {h['alloc']} | {h['peak']} | {h['base']} | {h['data_peak']} |")
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def write(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "summary.md").write_text(self.markdown())
        (directory / "summary.json").write_text(json.dumps(self.summary(), indent=1))

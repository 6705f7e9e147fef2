"""Firmware GC heap through a full scenario on a virtual board: `python -m bench.firmware_heap`.

The whole system runs (broker, bridge, 114 intake); one virtual board with its heap capped goes
through presses, acks, a cancel, a heat alarm, a smoke alarm, a GPS fix and telemetry. Printed:
the heap the loaded firmware takes (`base`), the sampled peak, and the data peak on top of the code.
A panic button goes through the presses and cancels with its heap capped at the 64 KB target (the
budget of an ESP32 without PSRAM, here on the 64-bit unix port). Also what each module costs once
imported into the heap as `.mpy`. `lowmem` counts the memory errors the firmware rode out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stack.run import Stack

ROOT = Path(__file__).resolve().parent.parent

# Run inside MicroPython: the heap each firmware module takes once imported (bytecode is loaded into
# RAM on the unix port; on an ESP32 frozen modules or ROMFS keep it in flash).
IMPORT_COST = """
import gc, sys
sys.path.insert(0, '.')
mods = ['asyncio', 'sign', 'config', 'persist', 'events', 'outbox', 'callpoint', 'console', 'clock',
        'indicator', 'board.virtual', 'mqtt_codec', 'mqtt', 'protocol', 'delivery', 'commands', 'rig', 'app', 'sensing',
        'board.virtual_sensors']
for m in mods:
    gc.collect(); a = gc.mem_alloc(); __import__(m); gc.collect()
    print(m, gc.mem_alloc() - a)
"""


def nmea(body: str) -> str:
    cs = 0
    for c in body.encode():
        cs ^= c
    return f"${body}*{cs:02X}"


def import_costs() -> list[tuple[str, int]]:
    from provisioning.image import firmware_files
    from provisioning.vboard import micropython_exe

    with tempfile.TemporaryDirectory() as tmp:
        for f in firmware_files():
            target = Path(tmp) / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.data)
        out = subprocess.run([micropython_exe(), "-X", "heapsize=1M", "-c", IMPORT_COST], cwd=tmp,
                             capture_output=True, text=True, timeout=60).stdout
    return [(n, int(v)) for n, v in (line.split() for line in out.splitlines() if line.strip())]


def scenario(heap: str, board: str = "virtual") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        s = Stack(Path(tmp) / "stack", 1, keep_consoles=True, heap=heap, board=board)
        s.up()
        try:
            vb = s.boards[0]
            con = vb.console
            online = vb.request("heap")

            for _ in range(5):
                mark = con.mark()
                vb.request("press", ms=80)
                con.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 30, since=mark)
                con.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 10, since=mark)
                vb.request("press", ms=3500)  # a long hold cancels it
                mark = con.mark()
                con.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "cancel", 30, since=mark)
                con.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 10, since=mark)
            if board != "virtual":  # no sensors fitted
                time.sleep(6)
                return dict(vb.request("heap"), online=online["alloc"])
            hms = time.strftime("%H%M%S", time.gmtime())
            vb.request("nmea", line=nmea(f"GPGGA,{hms}.00,1046.6133,N,10642.0484,E,1,09,0.9,12.0,M,2.0,M,,"))
            vb.request("sensor", tau=5)
            mark = con.mark()
            vb.request("sensor", t=95)
            con.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm", 60, since=mark)
            vb.request("sensor", obs=0.5)
            vb.request("sensor", t=25, obs=0.0)
            con.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "restore", 90, since=mark)
            time.sleep(6)  # telemetry and the last acks
            return dict(vb.request("heap"), online=online["alloc"])
        finally:
            s.down()


def chip_scenario(board: str, dev: str, presses: int = 3) -> dict:
    """The same presses on the emulated ESP32 (32-bit, no PSRAM, .mpy from LittleFS as a stock build
    loads them): the installer's image for `board`, with the whole system behind it."""
    from stack.chip import ChipSystem

    with tempfile.TemporaryDirectory() as tmp:
        chip = ChipSystem(Path(tmp), dev, board=board, via_rom_loader=False)
        try:
            chip.up()
            b = chip.board
            assert b is not None and b.console is not None
            con = b.console
            at_boot = b.request("heap", timeout=60)
            con.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 120)
            online = b.request("heap", timeout=60)
            for _ in range(presses):
                mark = con.mark()
                b.request("press", ms=80, timeout=60)
                con.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 120, since=mark)
                con.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 60, since=mark)
                mark = con.mark()
                b.request("press", ms=3500, timeout=60)  # a long hold cancels it
                con.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "cancel", 60, since=mark)
                con.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 60, since=mark)
            if not presses:
                time.sleep(20)  # online and idle: telemetry, keepalives
            end = b.request("heap", timeout=60)
            return dict(end, online=online["alloc"], boot_free=at_boot["free"], boot_alloc=at_boot["alloc"],
                        online_sys=(online.get("sys_free"), online.get("sys_largest")))
        finally:
            chip.down()


def report_chip(h: dict) -> None:
    print(f"  heap at boot: live {h['boot_alloc'] / 1024:6.1f} KB, free {h['boot_free'] / 1024:.1f} KB "
          f"(of {(h['boot_alloc'] + h['boot_free']) / 1024:.0f} KB)")
    print(f"  firmware state at start (base){h['base'] / 1024:6.1f} KB   (bytecode in the heap: no ROMFS in 1.24)")
    print(f"  live once online              {h['online'] / 1024:6.1f} KB")
    print(f"  sampled peak                  {h['peak'] / 1024:6.1f} KB")
    print(f"  live after the scenario       {h['alloc'] / 1024:6.1f} KB, free {h['free'] / 1024:.1f} KB")
    print(f"  memory errors ridden out      {h['lowmem']:6d}")
    # ESP-IDF's own heap, where Wi-Fi, lwIP and a TLS session live: what the GC heap left them.
    for label, (free, largest) in (("online", h["online_sys"]), ("after the scenario",
                                                                  (h.get("sys_free"), h.get("sys_largest")))):
        if free is not None:
            print(f"  system heap {label + ':':20s}free {free / 1024:.1f} KB, largest block {largest / 1024:.1f} KB")


def report(h: dict) -> None:
    print(f"  firmware state at boot (base) {h['base'] / 1024:6.1f} KB   (modules in ROM: bytecode not counted)")
    print(f"  live once online              {h['online'] / 1024:6.1f} KB")
    print(f"  sampled peak                  {h['peak'] / 1024:6.1f} KB   (live data and garbage not yet collected)")
    print(f"  data peak (peak - base)       {h['data_peak'] / 1024:6.1f} KB")
    print(f"  live after the scenario       {h['alloc'] / 1024:6.1f} KB, free {h['free'] / 1024:.1f} KB")
    print(f"  memory errors ridden out      {h['lowmem']:6d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--heap", default="192K", help="GC heap cap of the board with sensors (default 192K)")
    ap.add_argument("--panic-heap", default="72K", help="GC heap cap of the panic button (default 72K, "
                    "the 64 KB target plus the module split measured on this port)")
    ap.add_argument("--esp32", action="store_true", help="also on the emulated ESP32 (a few minutes)")
    ap.add_argument("--esp32-only", action="store_true", help="only on the emulated ESP32")
    args = ap.parse_args(argv)
    if args.esp32 or args.esp32_only:
        from stack.esp32_qemu import EmulatorMissing, find_emulator

        try:
            find_emulator()
        except EmulatorMissing as e:
            print(f"emulated ESP32: skipped: {e}")
            args.esp32 = args.esp32_only = False
    if args.esp32_only:
        return run_chip()
    print("firmware heap: import cost per module (KB, MicroPython unix port, .mpy loaded into the heap)")
    costs = import_costs()
    for name, b in costs:
        print(f"  {name:<24} {b / 1024:6.1f}")
    print(f"  {'total':<24} {sum(b for _, b in costs) / 1024:6.1f}")
    h = scenario(args.panic_heap, board="virtual-panic")
    print(f"panic button (virtual-panic) under -X heapsize={args.panic_heap}: 5 presses, each accepted by 114 "
          "and cancelled by a long hold")
    report(h)
    h = scenario(args.heap)
    print(f"board with sensors (virtual) under -X heapsize={args.heap}: 5 presses with cancels, heat, smoke, "
          "GPS, telemetry")
    report(h)
    return run_chip() if args.esp32 else 0


def run_chip() -> int:
    # The panic board's call point is on GPIO27, which the emulator reads as low (pressed) whatever
    # the pull-up: it is measured online and idle; the sensor board (button on GPIO0) goes through presses.
    for board, dev, presses, what in (("esp32-panic-battery", "bench-chip-panic", 0, "panic button"),
                                      ("esp32-devkitc", "bench-chip-sensor", 3, "sensor board")):
        h = chip_scenario(board, dev, presses)
        scenario_text = (f"{presses} presses, each accepted by 114 and cancelled" if presses
                         else "boot, online, 20 s idle")
        print(f"{what} ({board}) on the emulated ESP32: {scenario_text}")
        report_chip(h)
    return 0


if __name__ == "__main__":
    sys.exit(main())

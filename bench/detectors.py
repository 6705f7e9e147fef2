# Detector cost on the real MicroPython interpreter, in a 64 KB GC heap (our ESP32 budget stand-in):
# microseconds per update() of each detector and of the driver maths, and the heap they hold.
#   .venv/bin/python bench/detectors.py        (re-runs itself under micropython -X heapsize=64K)
#   .venv/bin/micropython -X heapsize=64K bench/detectors.py
# The unix port on a PC is much faster than an ESP32 at 240 MHz (roughly 30-60x); the figures
# compare detectors with each other and catch regressions, they are not ESP32 timings.
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."

if sys.implementation.name != "micropython":
    import shutil
    import subprocess

    exe = sys.executable.rsplit("/", 1)[0] + "/micropython"
    try:
        open(exe).close()
    except OSError:
        exe = shutil.which("micropython") or "micropython"
    sys.exit(subprocess.call([exe, "-X", "heapsize=64K", __file__] + sys.argv[1:]))

sys.path.insert(0, HERE + "/../firmware")

import gc  # noqa: E402
import time  # noqa: E402

N = 2000


def bench(name, make, step):
    gc.collect()
    before = gc.mem_alloc()
    obj = make()
    gc.collect()
    held = gc.mem_alloc() - before
    for i in range(200):  # warm up: fill the detectors' history buffers
        step(obj, i)
    gc.collect()
    t0 = time.ticks_us()
    for i in range(200, 200 + N):
        step(obj, i)
    us = time.ticks_diff(time.ticks_us(), t0) / N
    # allocation churn: heap growth over a few updates with the collector held off
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    try:
        for i in range(200 + N, 210 + N):
            step(obj, i)
        churn = (gc.mem_alloc() - a0) // 10
    except MemoryError:
        churn = -1
    gc.enable()
    gc.collect()
    held_after = gc.mem_alloc() - before
    churn_text = f"{churn:5d} B/update" if churn >= 0 else "n/a (heap full with the collector off)"
    print(f"{name:26s} {us:7.1f} us/update  state {held:5d} B (full history {held_after:5d} B)"
          f"  allocates {churn_text}")


def main():
    # Compiled from source in the 64 KB heap: the biggest module first, with a collection after each
    # one, or the compiler's garbage fragments the heap before the last import.
    from drivers import bme680 as chip

    gc.collect()
    from drivers.gps import GPS, checksum

    gc.collect()
    from detect.multi_criteria import MultiCriteria

    gc.collect()
    from detect.heat import HeatDetector
    from detect.smoke import SmokeDetector

    gc.collect()

    version = ".".join(str(x) for x in sys.implementation.version[:3])
    print(f"MicroPython {version}, heap {gc.mem_free() + gc.mem_alloc()} B")
    bench("HeatDetector", HeatDetector, lambda d, i: d.update(i * 2, 25.0 + (i % 7) * 0.1))
    bench("SmokeDetector", SmokeDetector, lambda d, i: d.update(i * 2, 0.01 * (i % 3), 25.0, 50.0, 100000))

    def multi_step(m, i):
        m.update(i * 2, {"t": 25.0 + (i % 7) * 0.1, "rh": 50.0, "p": 101325, "gas": 100000, "obs": 0.01})
    bench("MultiCriteria (heat+smoke)", MultiCriteria, multi_step)

    # the reference calibration of the design brief (a real part)
    cal = {"t1": 26041, "t2": 26469, "t3": 3, "p1": 36673, "p2": -10515, "p3": 88, "p4": 7310, "p5": -129,
           "p6": 30, "p7": 46, "p8": -3177, "p9": -2379, "p10": 30, "h1": 676, "h2": 1029, "h3": 0,
           "h4": 45, "h5": 20, "h6": 120, "h7": -100, "gh1": -30, "gh2": -24754, "gh3": 18,
           "res_heat_range": 1, "res_heat_val": 48, "range_sw_err": 0}
    field = bytearray(15)
    field[0] = 0x80
    field[5], field[6], field[7] = 0x7A, 0x5F, 0x80
    field[2], field[3], field[4] = 0x56, 0x4C, 0xD0
    field[8], field[9] = 0x4A, 0x4B
    field[13], field[14] = 0x60, 0x35
    bench("BME680 decode+compensate", lambda: cal, lambda c, i: chip.decode_field(c, field))

    body = "GNGGA,092750.000,2101.7107,N,10548.2890,E,1,8,1.03,61.7,M,55.2,M,,"
    line = f"${body}*{checksum(body):02X}\r\n".encode()

    class Uart:
        def __init__(self):
            self.n = 0

        def read(self):
            self.n ^= 1
            return line if self.n else None

    bench("GPS poll (one GGA)", lambda: GPS(Uart()), lambda g, i: g.poll(i))
    gc.collect()
    print(f"heap in use at the end: {gc.mem_alloc()} B of {gc.mem_free() + gc.mem_alloc()} B")


main()

# Entry point: MicroPython runs main.py after boot. Picks the board, runs the application.
import gc

# Collect often while the modules load: on an ESP32 the MicroPython heap grows into the system heap
# whenever a collection cannot make room, and never gives it back; what it takes at start-up is
# missing when Wi-Fi starts ("phy_init: failed to allocate memory", abort(), a reboot loop).
# The app sets its own threshold once it runs.
gc.collect()
gc.threshold(4096)

import asyncio  # noqa: E402

import board  # noqa: E402
from app import App  # noqa: E402


def run():
    asyncio.run(App(board.create()).main())


run()

# Entry point: MicroPython runs main.py after boot. The boot selector (slots.py) picks the
# application: the base firmware, or an update's slot. This file is compiled on the device at every
# boot and its code stays in the heap while the device runs, so it stays short.
import gc
import sys

# Collect often while the modules load: on an ESP32 the MicroPython heap grows into the system heap
# whenever a collection cannot make room, and never gives it back; what it takes at start-up is
# missing when Wi-Fi starts ("phy_init: failed to allocate memory", abort(), a reboot loop).
# The app sets its own threshold once it runs.
gc.collect()
gc.threshold(4096)
path = None
try:
    import os

    os.stat("ota-state.json")  # none on a device never updated: the selector costs it nothing
    import slots

    path = slots.boot()
    if path:
        sys.path.insert(0, path)
except OSError:
    pass
try:
    import asyncio

    import board
    from app import App

    asyncio.run(App(board.create()).main())
except Exception as e:  # an update that fails must not leave the device dead
    if not path:
        raise  # the base firmware, as it always did
    slots.error(path, e)

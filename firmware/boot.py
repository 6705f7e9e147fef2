# Runs before main.py on an ESP32 (the virtual board starts at main.py). MicroPython's own start-up
# mounts the filesystem with LittleFS's smallest reads (32 bytes, a 128-byte cache), so importing a
# module costs one flash read per 128 bytes, and every flash read stalls the caches of both cores:
# on the emulated ESP32 that is seconds per module. Remounted with 512-byte reads (the same format
# on flash; the cache grows to 2 KB), the firmware loads in a fraction of the time.
import sys

if sys.platform == "esp32":
    import vfs
    from flashbdev import bdev  # type: ignore[import-not-found]  # frozen into the ESP32 port

    try:
        vfs.umount("/")
        vfs.mount(vfs.VfsLfs2(bdev, readsize=512, progsize=32, lookahead=32), "/")
    except OSError:
        try:
            vfs.mount(bdev, "/")  # as MicroPython mounted it
        except OSError:
            pass  # still mounted as it was
    del vfs, bdev
    # Our modules are in /lib (provisioning/image.py); searched before the root, each import costs
    # three lookups fewer.
    sys.path[:] = [".frozen", "/lib", ""]

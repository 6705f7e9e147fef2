# Boot of the virtual board (MicroPython unix port), the counterpart of the ESP32's boot sequence:
# mount the flash, make it the working directory, run main.py.
#   micropython vboot.py --flash DIR --src FIRMWARE_DIR   (a directory as flash, .mpy files from a directory)
#   python romhost.py ROM.IMG vboot.py --flash DIR          (firmware in place from a ROMFS image, /rom)
#   micropython vboot.py --image FS.IMG [--blocks N]       (a built LittleFS image, firmware from it)
import os
import sys


def _arg(name, default=None):
    a = sys.argv
    for i in range(len(a) - 1):
        if a[i] == name:
            return a[i + 1]
    return default


here = __file__.rsplit("/", 1)[0]
sys.path[:] = [p for p in sys.path if p not in (here, "")]
rom = os.getenv("BAOCHAY_ROM")
if rom:
    # The firmware as a ROMFS image mapped outside the heap (provisioning/romhost.py): mounted and
    # searched first, as a MicroPython build with ROMFS does at start-up.
    import uctypes
    import vfs

    addr, size = rom.split(":")
    vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(addr), int(size))), "/rom")  # type: ignore[attr-defined]  # unix port only
    sys.path[:0] = ["/rom", "/rom/lib"]
image = _arg("--image")
if image:
    import vfs

    sys.path.insert(0, here)
    from filedev import FileBlockDevice

    sys.path.remove(here)
    dev = FileBlockDevice(image, 4096)
    vfs.mount(vfs.VfsLfs2(dev, readsize=32, progsize=32, lookahead=32), "/flash")  # type: ignore[abstract]
    os.chdir("/flash")
    sys.path[:0] = ["/flash", "/flash/lib"]
else:
    os.chdir(_arg("--flash", "."))
    src = _arg("--src", None if rom else here + "/..")
    if src:
        sys.path.insert(0, src)

import main  # noqa: E402,F401

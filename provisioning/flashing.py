"""Writing a device's images: to a real board with esptool (v5, as a library), or for the virtual board.

Before anything is written the chip and its flash size are identified and compared with the board entry:
a filesystem image sized for another flash would boot-loop the board.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import serial
from esptool import FatalError
from esptool.cmds import (
    attach_flash,
    detect_chip,
    detect_flash_size,
    merge_bin,
    reset_chip,
    run_stub,
    write_flash,
)
from esptool.loader import StubFlasher

from .boards import ESPTOOL_CHIP_NAMES, Board
from .errors import ProvisionError
from .progress import Progress
from .serialport import check_port

DEFAULT_VBOARDS_DIR = Path("var") / "vboards"
DEFAULT_BAUD = 460800
# Which flasher runs on the chip once the ROM loader answers: esptool's own stub (fast; the default),
# its legacy stub (esptool 4's, needed where the new one never reports ready, as on Espressif's
# emulated ESP32), or none (the ROM loader itself: slow, about 7 KB/s, but needs nothing loaded).
STUBS = ("esptool", "legacy", "none")


class FlashError(ProvisionError):
    pass


def check_chip(board: Board, chip_name: str, flash_size: str | None) -> None:
    """Compare what esptool detected (CHIP_NAME such as 'ESP32-C3', flash size such as '4MB')."""
    want = ESPTOOL_CHIP_NAMES.get(board.chip)
    if want is None:
        raise FlashError(f"board '{board.name}' is not a real chip ({board.chip}); nothing to flash over serial")
    got = (chip_name or "").upper()
    if got != want:
        raise FlashError(
            f"wrong chip: the board on this port is an {chip_name}, but device's board '{board.name}' is an "
            f"{want}. Check that you plugged in the right board, or provision the device for a board with "
            f"an {chip_name} (see: boards)."
        )
    if flash_size is None:
        raise FlashError(f"could not detect the flash size of this {chip_name}; board '{board.name}' "
                         f"expects {board.flash_size}. Try a lower --baud or another cable.")
    if flash_size != board.flash_size:
        raise FlashError(
            f"wrong flash size: this {chip_name} has {flash_size} of flash, board '{board.name}' expects "
            f"{board.flash_size}. MicroPython sizes its filesystem to the flash, so an image built for "
            f"{board.flash_size} would not mount. Use a board entry with {flash_size}."
        )


def _connect_hint(board: Board) -> str:
    if board.usb == "native":
        return ("This board has native USB: hold BOOT, press and release RESET (or plug the cable in), "
                "release BOOT, then try again.")
    return "Hold the BOOT button while esptool says 'Connecting...', or try another cable or --baud 115200."


def _plan(board: Board, image: Path, firmware: Path | None) -> list[tuple[int, str]]:
    plan = []
    if firmware is not None:
        if not Path(firmware).is_file():
            raise FlashError(f"firmware file {firmware} not found (download the MicroPython .bin for {board.chip})")
        plan.append((board.firmware_offset, str(firmware)))
    if not Path(image).is_file():
        raise FlashError(f"image {image} not found; run 'build' first")
    if Path(image).stat().st_size != board.filesystem.size:
        raise FlashError(f"image {image} is {Path(image).stat().st_size} bytes but board '{board.name}' has a "
                         f"{board.filesystem.size}-byte filesystem; rebuild it with 'build'")
    plan.append((board.filesystem.offset, str(image)))
    return plan


def _load_stub(esp, stub: str):
    if stub not in STUBS:
        raise FlashError(f"unknown stub '{stub}': choose one of {', '.join(STUBS)}")
    if stub == "none":
        return esp
    StubFlasher.set_stub_subdir("1" if stub == "legacy" else "2")
    return run_stub(esp)


def identify(port: str, board: Board, baud: int = 115200, connect_attempts: int = 7, stub: str = "esptool"):
    """Connect to the ROM loader; return (esp, chip_name, flash_size) after checking them against the board."""
    check_port(port)
    if stub not in STUBS:
        raise FlashError(f"unknown stub '{stub}': choose one of {', '.join(STUBS)}")
    try:
        esp = detect_chip(port, baud=baud, connect_attempts=connect_attempts)
    except FatalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "no answer"
        raise FlashError(f"no ESP chip answered on {port} ({first}). {_connect_hint(board)}") from None
    except serial.SerialException as e:
        raise FlashError(f"serial error on {port}: {e}") from None
    try:
        chip_name = esp.CHIP_NAME
        esp = _load_stub(esp, stub)
        flash_size = detect_flash_size(esp)
        check_chip(board, chip_name, flash_size)
    except BaseException:
        esp.__exit__(None, None, None)  # closes the serial port
        raise
    return esp, chip_name, flash_size


def flash_serial(port: str, board: Board, image: Path, firmware: Path | None = None,
                 baud: int = DEFAULT_BAUD, connect_attempts: int = 7, stub: str = "esptool") -> None:
    plan = _plan(board, image, firmware)
    esp, _chip, _size = identify(port, board, connect_attempts=connect_attempts, stub=stub)
    try:
        if baud != 115200 and "://" not in port:  # a socket has no baud rate to raise
            esp.change_baud(baud)
        attach_flash(esp)
        write_flash(esp, plan)  # esptool prints its own progress per region and verifies the hash
        reset_chip(esp, "hard-reset")
    except FatalError as e:
        raise FlashError(f"flashing failed: {e}") from None
    finally:
        esp.__exit__(None, None, None)  # closes the serial port


def merge(board: Board, image: Path, firmware: Path, output: Path) -> Path:
    """One raw image from flash address 0 (esptool merge-bin) for factory flashing: write it at 0x0."""
    if firmware is None:
        raise FlashError("--merge needs --firmware: the merged image starts at 0x0 and would otherwise erase "
                         "the MicroPython firmware")
    plan = _plan(board, image, firmware)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        merge_bin(plan, chip=board.chip, output=str(output), format="raw")
    except FatalError as e:
        raise FlashError(f"merge-bin failed: {e}") from None
    output.chmod(0o600)  # it holds the device key
    return output


def vboard_image_path(dev_id: str, vboards_dir: Path = DEFAULT_VBOARDS_DIR) -> Path:
    """Where the virtual board of a device boots its filesystem from."""
    return Path(vboards_dir) / dev_id / "fs.img"


def flash_virtual(image: Path, dest: Path) -> Path:
    """'Flash' a virtual board: copy the image to the file it mounts, atomically (it may be running)."""
    if not Path(image).is_file():
        raise FlashError(f"image {image} not found; run 'build' first")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    size = Path(image).stat().st_size
    chunk = 256 * 1024
    bar = Progress("write", size // chunk + 1)
    with open(image, "rb") as src, open(tmp, "wb") as out:
        os.chmod(tmp, 0o600)
        n = 0
        while True:
            block = src.read(chunk)
            if not block:
                break
            out.write(block)
            n += 1
            bar.update(n)
    bar.done()
    shutil.copymode(image, tmp)
    os.replace(tmp, dest)
    return dest

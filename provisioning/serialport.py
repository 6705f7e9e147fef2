"""Serial ports for the installer: plain-word errors for a missing or busy port, and opening one without
resetting the board."""

from __future__ import annotations

import errno
import os

import serial

from .errors import ProvisionError


class PortError(ProvisionError):
    pass


def candidate_ports() -> list[str]:
    try:
        from serial.tools import list_ports
    except ImportError:  # pragma: no cover
        return []
    return [p.device for p in list_ports.comports()]


def _explain(port: str, e: serial.SerialException) -> PortError:
    text = str(e)
    code = getattr(e, "errno", None)
    if "exclusively lock" in text or code in (errno.EBUSY, errno.EAGAIN):
        return PortError(
            f"serial port {port} is busy: another program has it open (a serial monitor, a running "
            f"'verify' or 'flash', the local stack). Close it and try again."
        )
    if "Permission denied" in text or code == errno.EACCES:
        return PortError(
            f"no permission to open {port}: add yourself to the 'dialout' group "
            f"(sudo usermod -aG dialout $USER, then log in again)"
        )
    return PortError(f"cannot open serial port {port}: {text}")


def check_port(port: str) -> None:
    """Fail early, in plain words, on a port that is missing or that another program holds."""
    if "://" in port:  # a pyserial URL (rfc2217://, socket://): nothing to check locally
        return
    if not os.path.exists(port):
        present = ", ".join(candidate_ports()) or "none found"
        raise PortError(
            f"serial port {port} not found. Is the board plugged in (with a data cable, not a charge-only "
            f"one)? Serial ports present now: {present}"
        )
    s = open_port(port)
    s.close()


def open_port(port: str, baud: int = 115200, timeout: float = 0.1) -> serial.SerialBase:
    """Open exclusively with DTR and RTS released, so an ESP32-DevKitC is neither reset nor put in its
    boot loader by the auto-reset circuit."""
    if "://" not in port and not os.path.exists(port):
        raise PortError(f"serial port {port} not found")
    try:
        s = serial.serial_for_url(port, baudrate=baud, timeout=timeout, exclusive=True, do_not_open=True)
        s.dtr = False
        s.rts = False
        s.open()
    except serial.SerialException as e:
        raise _explain(port, e) from None
    except OSError as e:
        raise _explain(port, serial.SerialException(e.errno, str(e))) from None
    return s

"""Free loopback ports for services started on this machine."""

import socket

from .procs import wait_until


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def accepts(host: str, port: int) -> bool:
    """True when something accepts a TCP connection on host:port now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    try:
        wait_until(lambda: accepts(host, port), timeout, 0.05, what=f"something listening on {host}:{port}")
    except AssertionError as e:
        raise TimeoutError(str(e)) from None

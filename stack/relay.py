"""One TCP connection relayed over stdin/stdout: `python -m stack.relay HOST PORT`.

The emulated ESP32's network is closed (QEMU's user network with restrict=on); each `guestfwd` rule
starts this command for every connection the device opens to a forwarded address, so the device
reaches exactly the test's own servers on loopback, and reconnects as often as it needs to.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int) -> int:
    try:
        sock = socket.create_connection((host, port), timeout=5)
    except OSError:
        return 1  # nothing listens (a broker outage): the device sees its connection closed
    sock.settimeout(None)  # blocking sends; reads only when the selector says there is data
    sel = selectors.DefaultSelector()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    try:
        while True:
            for key, _ in sel.select():
                if key.fileobj == stdin:
                    data = os.read(stdin, 65536)
                    if not data:
                        return 0
                    sock.sendall(data)
                else:
                    data = sock.recv(65536)
                    if not data:
                        return 0
                    view = memoryview(data)
                    while view:
                        view = view[os.write(stdout, view):]
    except OSError:
        return 0  # either side went away: the connection ends, as it would on a real network
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(relay(sys.argv[1], int(sys.argv[2])))

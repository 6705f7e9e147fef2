"""Helpers for the sink tests: Report factories and a real DC-09 receiver (pysiaalarm) on a loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading

from pysiaalarm import CommunicationsProtocol, SIAAccount
from pysiaalarm.aio import SIAClient

from bridge.report import Location, Report, Site
from stack.ports import free_port

BASE_TS = 1764412345.0  # 2025-11-29 10:32:25 UTC

SITE = Site(
    building="Tòa nhà Sông Hồng",
    address="23 Phan Chu Trinh, Hoàn Kiếm, Hà Nội",
    floor="3",
    room="305",
    contact_phone="+84 24 3826 0000",
    province="Hà Nội",
    dc09_account="1234",
    dc09_receiver="1",
    dc09_line="1",
)


def make_report(**changes) -> Report:
    """A smoke alarm from hn-a-0001 at the site above; any field can be changed."""
    base = Report(
        event_id="hn-a-0001-00000017",
        device_id="hn-a-0001",
        board="esp32-devkitc",
        type="alarm",
        cause="smoke",
        incident_key="hn-a-0001-00000017",
        references=None,
        occurred_at=BASE_TS,
        received_at=BASE_TS + 0.4,
        location=Location(lat=21.028511, lon=105.804817, accuracy_m=15, source="fixed"),
        site=SITE,
        confidence=0.92,
        reasons=("optical 0.21 dB/m above threshold", "temperature rising 6 K/min"),
        readings={"t": 41.5, "rh": 38.2, "p": 100812, "gas": 48210, "obs": 0.21},
    )
    return dataclasses.replace(base, **changes)


def follow_up(original: Report, n: int, type: str, cause: str | None = None, **changes) -> Report:
    """The n-th event after `original` on the same device, referring to it."""
    ctr = int(original.event_id.rsplit("-", 1)[1]) + n
    return make_report(
        event_id=f"{original.device_id}-{ctr:08d}",
        type=type,
        cause=cause or original.cause,
        incident_key=original.incident_key,
        references=original.event_id,
        occurred_at=original.occurred_at + 30 * n,
        received_at=original.received_at + 30 * n,
        **changes,
    )


class SiaReceiver:
    """pysiaalarm's asyncio receiver on 127.0.0.1 in a thread of its own; decoded events land in a queue."""

    def __init__(self, transport: str, account: str = "1234", key: str | None = None):
        self.port = free_port()
        self.events: queue.Queue = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.udp = transport == "udp"
        protocol = CommunicationsProtocol.UDP if self.udp else CommunicationsProtocol.TCP

        async def on_event(event):
            self.events.put(event)

        self.client = SIAClient(
            "127.0.0.1", self.port, [SIAAccount(account, key)], on_event, protocol=protocol
        )

    def __enter__(self) -> SiaReceiver:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.client.async_start(), self.loop).result(5)
        if self.udp:
            # pysiaalarm asserts isinstance(transport, asyncio.DatagramTransport) in connection_made, which
            # CPython 3.11's selector datagram transport does not pass (it only subclasses Transport), so
            # its transport stays unset and it cannot reply; hand it the transport it was given.
            self.client.sia_server.transport = self.client.transport
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.client.async_stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def next_event(self, timeout: float = 5.0):
        return self.events.get(timeout=timeout)


class ServedInThread:
    """Base for the tests' fake receivers: `self.server` (a socketserver) serves on a thread while in
    a with-block."""

    server: object

    def _serve(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

"""SIA DC-09 sink: reports to an alarm receiving centre (ARC) over TCP or UDP, as SIA-DCS or ADM-CID.

One frame per report, one connection per frame on TCP (so no half-dead connection can swallow an alarm).
Replies: ACK (or RSP) -> accepted with the sequence number as ref; NAK -> the receiver's clock is
adopted (offset from its timestamp) and the frame is sent once more at once, then retry; DUH -> refused
(the receiver does not understand the code or format: an operator must look); nothing -> retry.

Sequence numbers run 0001..9999 and wrap, per sink. An event keeps its number across retries (and across
restarts when `state_path` is set), so a receiver that deduplicates by account + sequence drops a
retransmission rather than raising the alarm twice. NULL supervision frames take fresh numbers.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from ..report import Outcome, Report
from . import dc09_codes
from .dc09_frame import Frame, FrameError, decode, encode

FORMATS = ("SIA-DCS", "ADM-CID")
XDATA_FIELDS = ("X", "Y", "L")
TEXT_MAX = 200  # characters of location text in the [L...] block
SEQ_MEMORY = 4096  # events whose sequence number is remembered


def parse_key(key: str | None, key_text: str | None) -> bytes | None:
    """`key`: the AES key as 32, 48 or 64 hex digits (16/24/32 bytes). `key_text`: 16, 24 or 32
    characters used as the key bytes themselves, the convention of pysiaalarm / Home Assistant and of
    panels configured for it."""
    if key and key_text:
        raise ValueError("give either key (hex) or key_text, not both")
    if key:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raise ValueError("key must be hex digits") from None
    elif key_text:
        raw = key_text.encode("ascii")
    else:
        return None
    if len(raw) not in (16, 24, 32):
        raise ValueError(f"AES key must be 16, 24 or 32 bytes, got {len(raw)}")
    return raw


def ascii_text(text: str) -> str:
    """Vietnamese text folded to the ASCII a DC-09 frame carries ("Tầng 3" -> "Tang 3"), without the
    characters that delimit DC-09 fields."""
    text = text.replace("đ", "d").replace("Đ", "D")
    folded = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return re.sub(r"[^\x20-\x7e]|[\[\]|^_]", "", folded).strip()


def coordinates(lat: float, lon: float) -> tuple[str, str]:
    """[X] longitude and [Y] latitude: hemisphere letter + decimal degrees, 6 decimals (<= 12 chars)."""
    x = ("E" if lon >= 0 else "W") + f"{abs(lon):.6f}"
    y = ("N" if lat >= 0 else "S") + f"{abs(lat):.6f}"
    return "X" + x, "Y" + y


def location_text(report: Report) -> str:
    s = report.site
    parts = [s.building, f"tang {s.floor}" if s.floor else "", f"phong {s.room}" if s.room else "", s.address]
    return ascii_text(", ".join(p for p in parts if p))[:TEXT_MAX]


class SeqBook:
    """Sequence numbers: the next one, and the one each recent event got. Persisted as JSON lines
    (append-only, compacted when it grows) when a path is given."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.by_event: OrderedDict[str, int] = OrderedDict()
        self.last = 0
        self.lines = 0
        if self.path and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.by_event[rec["e"]] = self.last = int(rec["s"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash
            self._trim()
            self._compact()

    def _trim(self) -> None:
        while len(self.by_event) > SEQ_MEMORY:
            self.by_event.popitem(last=False)

    def _compact(self) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"e": e, "s": s}) + "\n" for e, s in self.by_event.items()))
        os.replace(tmp, self.path)
        self.lines = len(self.by_event)

    def next(self) -> int:
        self.last = self.last % 9999 + 1
        return self.last

    def for_event(self, event_id: str) -> int:
        if event_id in self.by_event:
            return self.by_event[event_id]
        seq = self.by_event[event_id] = self.next()
        self._trim()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"e": event_id, "s": seq}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.lines += 1
            if self.lines > 2 * SEQ_MEMORY:
                self._compact()
        return seq


class Dc09Sink:
    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "tcp",
        format: str = "SIA-DCS",
        account: str = "",
        receiver: str = "1",
        line: str = "1",
        key: str | None = None,
        key_text: str | None = None,
        timeout_s: float = 5.0,
        supervision_s: float = 0,
        state_path: str | None = None,
        xdata: Iterable[str] = XDATA_FIELDS,
        button: str = "fire",
        panic_accounts: Iterable[str] = (),
        zones: dict | None = None,
        zone: int = 1,
        partition: int = 1,
        send_prealarm: bool = False,
        clock: Callable[[], float] = time.time,
    ):
        if port is None:
            raise ValueError("port is required")
        if transport not in ("tcp", "udp"):
            raise ValueError("transport must be tcp or udp")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if button not in ("fire", "panic"):
            raise ValueError("button must be fire or panic")
        self.xdata = tuple(xdata)
        if not set(self.xdata) <= set(XDATA_FIELDS):
            raise ValueError(f"xdata fields are {', '.join(XDATA_FIELDS)}")
        self.name = name
        self.addr = (host, int(port))
        self.transport, self.format = transport, format
        self.account, self.receiver, self.line = account.upper(), str(receiver).upper(), str(line).upper()
        self.key = parse_key(key, key_text)
        self.timeout_s = float(timeout_s)
        self.button = button
        self.panic_accounts = {a.upper() for a in panic_accounts}
        self.zones = {str(k): int(v) for k, v in (zones or {}).items()}
        self.zone, self.partition = int(zone), int(partition)
        self.send_prealarm = send_prealarm
        self.clock = clock
        self.offset_s = 0.0  # receiver clock minus ours, learnt from NAKs
        self.seqs = SeqBook(state_path)
        self.lock = threading.Lock()
        self.routes: dict[str, tuple[str, str]] = {}  # account -> (receiver, line) seen, for supervision
        if self.account:
            self.routes[self.account] = (self.receiver, self.line)
        self.last_ok: dict[str, float] = {}
        self.last_frame = b""  # the last frame put on the wire, for logs and tests
        self.supervision_s = float(supervision_s)
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        if self.supervision_s > 0:
            self._supervisor = threading.Thread(target=self._supervise_loop, name=f"dc09-{name}", daemon=True)
            self._supervisor.start()

    # -- the Sink protocol ------------------------------------------------------------------------------

    def send(self, report: Report) -> Outcome:
        if report.type == "prealarm" and not self.send_prealarm:
            return Outcome.accepted(detail="prealarm not sent to the receiving centre (send_prealarm off)")
        account, receiver, line = self.route(report)
        if not account:
            return Outcome.refused("no DC-09 account: set site dc09_account or the sink's account")
        panic = self.button == "panic" or account in self.panic_accounts
        event = dc09_codes.event_for(report, panic=panic)
        seq = f"{self.seqs.for_event(report.event_id):04d}"
        zone = 0 if report.type == "test" else self.zones.get(report.device_id, self.zone)
        if self.format == "ADM-CID":
            data = f"#{account}|{event.cid} {self.partition:02d} {zone:03d}"
        else:
            data = f"#{account}|Nri{self.partition}/{event.sia}{zone:03d}"
        xdata = []
        if "X" in self.xdata or "Y" in self.xdata:
            x, y = coordinates(report.location.lat, report.location.lon)
            xdata += [v for f, v in (("X", x), ("Y", y)) if f in self.xdata]
        if "L" in self.xdata and location_text(report):
            xdata.append("L" + location_text(report))
        frame = Frame(self.format, seq, receiver, line, account, data, tuple(xdata))
        with self.lock:
            self.routes[account] = (receiver, line)
            return self._deliver(frame)

    def close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)

    # -- supervision ------------------------------------------------------------------------------------

    def supervise(self, force: bool = False) -> dict[str, Outcome]:
        """Send a NULL frame on every account this sink serves that has been quiet for supervision_s
        (all of them with force=True), so the receiving centre can supervise the path."""
        results = {}
        with self.lock:
            for account, (receiver, line) in list(self.routes.items()):
                quiet = self.clock() - self.last_ok.get(account, 0.0)
                if force or quiet >= self.supervision_s:
                    seq = f"{self.seqs.next():04d}"
                    results[account] = self._deliver(Frame("NULL", seq, receiver, line, account, ""))
        return results

    def _supervise_loop(self) -> None:
        tick = min(1.0, self.supervision_s / 4)
        while not self._stop.wait(tick):
            try:
                self.supervise()
            except Exception:  # noqa: BLE001 - a supervision hiccup must not kill the thread
                continue

    # -- delivery ---------------------------------------------------------------------------------------

    def route(self, report: Report) -> tuple[str, str, str]:
        s = report.site
        return (
            (s.dc09_account or self.account).upper(),
            (s.dc09_receiver or self.receiver).upper(),
            (s.dc09_line or self.line).upper(),
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock() + self.offset_s, timezone.utc).replace(microsecond=0)

    def _deliver(self, frame: Frame) -> Outcome:
        for attempt in (1, 2):
            stamped = replace(frame, timestamp=self.now())
            self.last_frame = encode(stamped, self.key)
            try:
                reply = self._exchange(self.last_frame, stamped)
            except OSError as e:
                return Outcome.retry(f"{self.transport} {self.addr[0]}:{self.addr[1]}: {e}")
            if reply is None:
                return Outcome.retry(f"no valid reply within {self.timeout_s:g} s")
            if reply.id in ("ACK", "RSP"):
                self.last_ok[frame.account] = self.clock()
                return Outcome.accepted(ref=frame.seq, detail=f"{reply.id} seq {frame.seq}")
            if reply.id == "DUH":
                return Outcome.refused(f"DUH: receiver does not understand {frame.id} {frame.data!r}")
            # NAK: adopt the receiver's clock if it told us its time, then try once more
            if reply.timestamp is not None:
                self.offset_s = reply.timestamp.timestamp() - self.clock()
            if attempt == 2:
                return Outcome.retry(f"NAK (clock offset now {self.offset_s:+.0f} s)")
        raise AssertionError("unreachable")

    def _matches(self, reply: Frame, sent: Frame) -> bool:
        return reply.id == "NAK" or reply.seq == sent.seq

    def _exchange(self, raw: bytes, sent: Frame) -> Frame | None:
        deadline = time.monotonic() + self.timeout_s
        if self.transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(raw, self.addr)
                while (left := deadline - time.monotonic()) > 0:
                    s.settimeout(left)
                    try:
                        data, _ = s.recvfrom(4096)
                    except TimeoutError:
                        return None
                    reply = self._parse_reply(data)
                    if reply is not None and self._matches(reply, sent):
                        return reply
            return None
        with socket.create_connection(self.addr, timeout=self.timeout_s) as s:
            s.sendall(raw)
            buf = b""
            while b"\r" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                try:
                    chunk = s.recv(4096)
                except TimeoutError:
                    return None
                if not chunk:
                    break
                buf += chunk
        reply = self._parse_reply(buf[: buf.find(b"\r") + 1] if b"\r" in buf else buf)
        return reply if reply is not None and self._matches(reply, sent) else None

    def _parse_reply(self, data: bytes) -> Frame | None:
        start = data.find(b"\n")
        if start < 0:
            return None
        try:
            return decode(data[start:], self.key, reply=True)
        except FrameError:
            return None

"""SIA DC-09 frames: build, parse (strictly), CRC-16/ARC and the AES-CBC encryption of the data part.

    LF crc len "ID" seq R<rcvr> L<prefix> #<acct> [data] [x1]... _HH:MM:SS,MM-DD-YYYY CR

`crc` is CRC-16/ARC (poly 0x8005 reflected, init 0) and `len` the length, both over the span from the
opening quote up to (not including) the CR, each as 4 upper-case hex digits ("0LLL"). An encrypted frame
has `*` before the ID; everything after the `[` becomes upper-case hex of AES-CBC (zero IV) over
`<random pad>|<data>]<xdata>_<timestamp>`, the pad making the plaintext a multiple of 16 bytes.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timezone

from Crypto.Cipher import AES  # pycryptodome, which pysiaalarm depends on too

MESSAGE_IDS = ("SIA-DCS", "ADM-CID", "NULL")
REPLY_IDS = ("ACK", "NAK", "DUH", "RSP")
TS_FORMAT = "%H:%M:%S,%m-%d-%Y"
# characters a pad may use: never '|', '[' or ']', which delimit the fields after decryption
PAD_ALPHABET = string.ascii_letters + string.digits
ZERO_IV = bytes(16)
MAX_BODY = 0xFFF  # the length field is "0LLL"

_HEADER = re.compile(
    r'"(?P<star>\*?)(?P<id>[A-Z-]+)"(?P<seq>\d{4})'
    r"(?:R(?P<rcvr>[0-9A-F]{1,6}))?(?:L(?P<line>[0-9A-F]{1,6}))?"
    r"(?:[#A](?P<acct>[0-9A-F]{1,16}))?\[(?P<rest>.*)\Z",
    re.S,
)
_CLEAR = re.compile(r"(?P<data>[^\[\]]*)\](?P<xdata>(?:\[[^\[\]]*\])*)(?:_(?P<ts>[0-9:,-]{19}))?\Z")


class FrameError(ValueError):
    pass


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC: check value 0xBB3D for b"123456789"."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def format_ts(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(TS_FORMAT)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, TS_FORMAT).replace(tzinfo=timezone.utc)


def encrypt(plain: str, key: bytes) -> str:
    """AES-CBC, zero IV, no padding scheme (the caller's random pad fills the last block)."""
    raw = plain.encode("ascii")
    if len(raw) % 16:
        raise FrameError("plaintext is not a multiple of 16 bytes")
    return AES.new(key, AES.MODE_CBC, ZERO_IV).encrypt(raw).hex().upper()


def decrypt(hex_text: str, key: bytes) -> str:
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError:
        raise FrameError("encrypted part is not hex") from None
    if not raw or len(raw) % 16:
        raise FrameError("encrypted part is not a multiple of 16 bytes")
    plain = AES.new(key, AES.MODE_CBC, ZERO_IV).decrypt(raw)
    try:
        return plain.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("decrypted text is not ASCII (wrong key?)") from None


def random_pad(body_len: int) -> str:
    """1 to 16 pad characters so that pad + '|' + body fills whole AES blocks."""
    n = (-(body_len + 1)) % 16 or 16
    return "".join(secrets.choice(PAD_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class Frame:
    id: str  # SIA-DCS, ADM-CID, NULL, or a reply: ACK, NAK, DUH, RSP
    seq: str  # 4 decimal digits
    receiver: str  # hex, without the "R"
    line: str  # hex, without the "L"
    account: str  # hex, without the "#"
    data: str  # between "[" and the first "]"; for encrypted frames, after the pad's "|"
    xdata: tuple[str, ...] = ()  # extended data blocks without brackets, e.g. "XE105.804817"
    timestamp: datetime | None = None
    encrypted: bool = False
    pad: str = ""

    def clear_text(self) -> str:
        text = self.data + "]" + "".join(f"[{x}]" for x in self.xdata)
        if self.timestamp is not None:
            text += "_" + format_ts(self.timestamp)
        return text


def encode(frame: Frame, key: bytes | None = None) -> bytes:
    """The frame on the wire. With a key the data part is encrypted (and `frame.encrypted` ignored)."""
    for name, value, low, high in (
        ("receiver", frame.receiver, 1, 6),
        ("line", frame.line, 1, 6),
        ("account", frame.account, 3, 16),
    ):
        if not re.fullmatch(rf"[0-9A-F]{{{low},{high}}}", value):
            raise FrameError(f"{name} {value!r} must be {low}-{high} upper-case hex digits")
    if not re.fullmatch(r"\d{4}", frame.seq):
        raise FrameError(f"sequence {frame.seq!r} must be 4 digits")
    star = "*" if key else ""
    head = f'"{star}{frame.id}"{frame.seq}R{frame.receiver}L{frame.line}#{frame.account}['
    clear = frame.clear_text()
    if key:
        pad = frame.pad or random_pad(len(clear))
        body = head + encrypt(pad + "|" + clear, key)
    else:
        body = head + clear
    raw = body.encode("ascii")
    if len(raw) > MAX_BODY:
        raise FrameError(f"frame too long ({len(raw)} > {MAX_BODY} bytes)")
    return b"\n" + f"{crc16_arc(raw):04X}{len(raw):04X}".encode() + raw + b"\r"


def _split(raw: bytes) -> str:
    """Check the envelope (LF, CRC, length, CR) and return the body text."""
    if len(raw) < 10 or raw[:1] != b"\n" or raw[-1:] != b"\r":
        raise FrameError("a frame starts with LF and ends with CR")
    head, body = raw[1:9], raw[9:-1]
    try:
        crc, length = int(head[:4], 16), int(head[4:], 16)
    except ValueError:
        raise FrameError("CRC and length must be hex") from None
    if head != head.upper() or head[4:5] != b"0":
        raise FrameError("CRC and length must be upper-case hex, length as 0LLL")
    if length != len(body):
        raise FrameError(f"length field {length} but the body has {len(body)} bytes")
    if crc != crc16_arc(body):
        raise FrameError(f"CRC {crc:04X} but the body's is {crc16_arc(body):04X}")
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("a frame is ASCII") from None


def decode(raw: bytes, key: bytes | None = None, reply: bool = False) -> Frame:
    """Parse a frame, field by field. Messages (reply=False) must carry R, L and #account, and an
    encrypted one must decrypt to `pad|...`; replies are read as receivers send them (NAK has A0 for
    the account, an encrypted ACK may pad without '|')."""
    text = _split(raw)
    m = _HEADER.match(text)
    if not m:
        raise FrameError(f"unrecognised header in {text[:40]!r}")
    ids = REPLY_IDS if reply else MESSAGE_IDS
    if m["id"] not in ids:
        raise FrameError(f"ID {m['id']!r} is not one of {', '.join(ids)}")
    if not reply:
        if m["rcvr"] is None or m["line"] is None or m["acct"] is None or f"#{m['acct']}[" not in text:
            raise FrameError("a message must carry R<receiver>, L<line> and #<account>")
        if not 3 <= len(m["acct"]) <= 16:
            raise FrameError("an account is 3-16 hex digits")
    encrypted = bool(m["star"])
    rest, pad = m["rest"], ""
    if encrypted:
        if key is None:
            raise FrameError("encrypted frame and no key")
        plain = decrypt(rest, key)
        if "|" in plain.split("]", 1)[0]:
            pad, rest = plain.split("|", 1)
        elif reply:
            rest = plain
        else:
            raise FrameError("decrypted data has no pad separator '|' (wrong key?)")
        if not reply and (not pad or any(c in "[]" for c in pad)):
            raise FrameError("pad must be 1-16 characters without brackets")
    c = _CLEAR.match(rest)
    if not c:
        raise FrameError(f"data part {rest[:60]!r} is not [data][xdata]..._timestamp")
    if c["ts"] is None and not reply:
        raise FrameError("a message must end with its _HH:MM:SS,MM-DD-YYYY timestamp")
    try:
        ts = parse_ts(c["ts"]) if c["ts"] else None
    except ValueError:
        raise FrameError(f"bad timestamp {c['ts']!r}") from None
    xdata = tuple(re.findall(r"\[([^\[\]]*)\]", c["xdata"]))
    return Frame(
        id=m["id"],
        seq=m["seq"],
        receiver=m["rcvr"] or "",
        line=m["line"] or "",
        account=m["acct"] or "",
        data=c["data"],
        xdata=xdata,
        timestamp=ts,
        encrypted=encrypted,
        pad=pad,
    )

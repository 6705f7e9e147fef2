"""DC-09 frames: CRC-16/ARC, the envelope, encryption, and our strict parser on every field."""

from datetime import datetime, timezone

import pytest
from pysiaalarm import SIAAccount, SIAEvent

from bridge.sinks.dc09_frame import PAD_ALPHABET, Frame, FrameError, crc16_arc, decode, encode

WHEN = datetime(2025, 11, 29, 10, 32, 25, tzinfo=timezone.utc)
FRAME = Frame(
    "SIA-DCS",
    "0042",
    "1",
    "1",
    "1234",
    "#1234|Nri1/FA001",
    ("XE105.804817", "YN21.028511", "LToa nha A"),
    WHEN,
)
KEYS = [b"0123456789ABCDEF", bytes(range(24)), bytes(range(32))]


def test_crc16_arc_check_value():
    # the catalogue check value of CRC-16/ARC (reveng CRC catalogue): "123456789" -> 0xBB3D
    assert crc16_arc(b"123456789") == 0xBB3D


def test_clear_frame_layout():
    raw = encode(FRAME)
    body = (
        b'"SIA-DCS"0042R1L1#1234[#1234|Nri1/FA001][XE105.804817][YN21.028511][LToa nha A]_10:32:25,11-29-2025'
    )
    assert raw == b"\n" + f"{crc16_arc(body):04X}{len(body):04X}".encode() + body + b"\r"
    assert len(body) == 0x63 and raw[5:9] == b"0063"  # "0LLL": the length in hex


def test_clear_frame_parses_back_field_by_field():
    assert decode(encode(FRAME)) == FRAME


@pytest.mark.parametrize("key", KEYS, ids=["aes128", "aes192", "aes256"])
def test_encrypted_frame_parses_back_field_by_field(key):
    raw = encode(FRAME, key)
    assert raw.startswith(b"\n") and b'"*SIA-DCS"0042R1L1#1234[' in raw
    got = decode(raw, key)
    assert got.encrypted and 1 <= len(got.pad) <= 16
    assert set(got.pad) <= set(PAD_ALPHABET)
    assert got.__class__(**{**got.__dict__, "encrypted": False, "pad": ""}) == FRAME


def test_encryption_pads_to_whole_blocks_and_differs_each_time():
    a, b = encode(FRAME, KEYS[0]), encode(FRAME, KEYS[0])
    hex_part = a[a.index(b"[") + 1 : -1]
    assert len(hex_part) % 32 == 0  # 16-byte blocks as hex
    assert a != b  # random pad, so the same event never gives the same cipher text


def test_encrypted_frame_with_the_wrong_key_is_rejected():
    with pytest.raises(FrameError):
        decode(encode(FRAME, KEYS[0]), b"FEDCBA9876543210")


def test_pysiaalarm_parser_reads_our_frames():
    for key in (None, "0123456789ABCDEF"):
        raw = encode(FRAME, key.encode() if key else None)
        ev = SIAEvent.from_line(raw.decode().strip(), {"1234": SIAAccount("1234", key)})
        assert ev.valid_message  # its CRC agrees with ours
        assert (ev.code, ev.sequence, ev.account, ev.timestamp) == ("FA", "0042", "1234", WHEN)


def corrupt(raw: bytes, at: int, by: bytes) -> bytes:
    return raw[:at] + by + raw[at + len(by) :]


@pytest.mark.parametrize(
    "mangle,why",
    [
        (lambda r: r[1:], "LF"),
        (lambda r: r[:-1], "CR"),
        (lambda r: corrupt(r, 1, b"0000"), "CRC"),
        (lambda r: corrupt(r, 5, b"0067"), "length"),
        (lambda r: r.replace(b"R1L1", b"L1"), "R<receiver>"),
        (lambda r: r.replace(b"_10:32:25,11-29-2025", b""), "timestamp"),
        (lambda r: r.replace(b'"SIA-DCS"', b'"SIA-DCX"'), "ID"),
    ],
)
def test_strict_parser_rejects_malformed_frames(mangle, why):
    raw = mangle(encode(FRAME))
    if why not in ("LF", "CR", "CRC", "length"):  # keep the envelope right so the field check is reached
        body = raw[9:-1]
        raw = b"\n" + f"{crc16_arc(body):04X}{len(body):04X}".encode() + body + b"\r"
    with pytest.raises(FrameError):
        decode(raw)


@pytest.mark.parametrize(
    "field,value", [("account", "12"), ("account", "12G4"), ("receiver", "1234567"), ("seq", "42")]
)
def test_builder_refuses_fields_a_receiver_cannot_parse(field, value):
    with pytest.raises(FrameError):
        encode(Frame(**{**FRAME.__dict__, field: value}))


def test_null_frame():
    null = Frame("NULL", "0007", "1", "1", "1234", "", (), WHEN)
    assert encode(null).endswith(b'"NULL"0007R1L1#1234[]_10:32:25,11-29-2025\r')
    assert decode(encode(null, KEYS[0]), KEYS[0]).data == ""

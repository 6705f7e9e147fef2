"""The reference SMSC's PDU reading and writing, byte for byte against SMPP 3.4's layouts (section 4),
and its concatenation and receipt rules."""

from __future__ import annotations

import struct

import pytest

from intake import smsc


def test_a_bind_transceiver_is_read_as_the_spec_lays_it_out():
    # section 4.1.5: system_id, password, system_type (C-Octet Strings), interface_version, addr_ton,
    # addr_npi, address_range
    body = b"bridge\0secret1\0\0" + bytes([0x34, 0, 0]) + b"\0"
    assert smsc.parse_bind(body) == ("bridge", "secret1")
    with pytest.raises(smsc.PduError):
        smsc.parse_bind(b"x" * 20)  # no NULL within system_id's 16 octets


def test_a_pdu_header_is_length_id_status_sequence_big_endian():
    p = smsc.pdu(smsc.SUBMIT_SM | smsc.RESP, smsc.ROK, 7, smsc.cstr("0000000001"))
    assert p[:16] == struct.pack(">IIII", 27, 0x80000004, 0, 7) and p[16:] == b"0000000001\0"


def test_submit_sm_round_trip_with_a_message_payload_tlv():
    body = smsc.sm_body("BAOCHAY", "84900000001", 0, 8, "Cháy".encode("utf-16-be"))
    sm = smsc.parse_sm(body)
    assert (sm["source"], sm["dest"], sm["data_coding"]) == ("BAOCHAY", "84900000001", 8)
    assert smsc.decode_text(8, sm["short_message"]) == "Cháy"
    long = "x" * 300
    with_tlv = smsc.sm_body("A", "849", 0, 0, b"") + struct.pack(">HH", 0x0424, 300) + long.encode()
    assert smsc.parse_sm(with_tlv)["short_message"] == long.encode()


def test_concatenated_parts_carry_their_reference_in_the_udh():
    udh = bytes([5, 0x00, 3, 0x2A, 2, 1])  # IEI 0: 8-bit reference 42, 2 parts, this is part 1
    assert smsc.split_udh(0x40, udh + b"abc") == ((0x2A, 2, 1), b"abc")
    assert smsc.split_udh(0x00, udh + b"abc") == (None, udh + b"abc")  # no UDHI bit: all text


def test_a_delivery_receipt_follows_appendix_b():
    text = smsc.receipt_text("00000000ab", "DELIVRD", 0, 60, "BÁO CHÁY")
    assert text.startswith(b"id:00000000ab sub:001 dlvrd:001 submit date:7001010000 done date:7001010001 "
                           b"stat:DELIVRD err:000 text:")

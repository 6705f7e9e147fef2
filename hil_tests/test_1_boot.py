"""Boot: the banner on the console, the retained `online` birth at the broker, `status` answers."""

from __future__ import annotations

import json

from firmware import protocol_host as protocol

FW_VERSION = "0.1.0"  # firmware/app.py FW_VERSION


def test_boot_banner_names_device_firmware_and_board(boards, bench):
    for b in boards:
        boot = b.dut.expect("boot", since=0)
        assert boot["dev"] == b.dev
        assert boot["fw"] == FW_VERSION
        assert boot["board"] == bench.board_entry["name"]
        assert isinstance(boot["boot"], int) and boot["boot"] >= 1


def test_retained_online_birth_with_version_and_board(boards, bench, observer):
    for b in boards:
        topic = protocol.topic(b.dev, "status")
        _, _, payload, _ = observer.wait(lambda m, topic=topic: m[1] == topic and b'"online"' in m[2], 30)
        birth = json.loads(payload)
        assert birth["state"] == "online" and birth["fw"] == FW_VERSION
        assert birth["board"] == bench.board_entry["name"] and birth["boot"] >= 1
    # a client that subscribes later still gets it: it is retained
    late = observer.another()
    try:
        for b in boards:
            topic = protocol.topic(b.dev, "status")
            _, _, payload, retained = late.wait(lambda m, topic=topic: m[1] == topic, 20)
            assert retained and json.loads(payload)["state"] == "online"
    finally:
        late.close()


def test_status_answers_with_identity_and_connection(boards, bench):
    for b in boards:
        st = b.dut.cmd("status")
        assert st["dev"] == b.dev and st["fw"] == FW_VERSION and st["board"] == bench.board_entry["name"]
        assert st["fault"] is None, f"standing fault at boot: {st['fault']}"
        b.dut.expect("mqtt", 30, since=0, state="connected")
        assert b.dut.cmd("status")["mqtt"] == "connected"

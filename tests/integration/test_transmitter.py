"""A virtual transmitter (real MicroPython) on a conventional fire alarm panel's relays, with a real
Mosquitto: each confirmed line state is a signed event on the broker, the acceptance by 114 drives
the acknowledgement output, and every device sends its periodic test."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from integration.support import body_of

from firmware import protocol_host as protocol

BOARD = "virtual-transmitter"


def signed(frame: bytes, key_hex: str) -> dict:
    body, sig = frame.split(b"\n", 1)
    assert hmac.compare_digest(sig, hmac.new(bytes.fromhex(key_hex), body, hashlib.sha256).hexdigest().encode())
    ev = json.loads(body)
    protocol.check_event(ev, ev["dev"])  # every field as the bridge checks it
    return ev


def wait_event(observer, vb, pred, timeout=20):
    dev = vb.cfg["dev"]
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic(dev, "event") and pred(body_of(m[1])), timeout)
    return signed(frame, vb.cfg["key"])


def ack(observer, vb, eid, stage, **extra):
    body = json.dumps({"v": 1, "id": eid, "stage": stage, "ts": int(time.time()), **extra},
                      separators=(",", ":")).encode()
    sig = hmac.new(bytes.fromhex(vb.cfg["key"]), body, hashlib.sha256).hexdigest().encode()
    observer.publish(protocol.topic(vb.cfg["dev"], "ack"), body + b"\n" + sig)


def online(observer, vb):
    observer.wait(lambda m: m[0] == protocol.topic(vb.cfg["dev"], "status") and b'"online"' in m[1])


def test_fire_relay_alarm_accepted_lights_the_ack_output_and_restore_clears_it(make_board, observer):
    vb = make_board("tx-a-0001", board=BOARD, panel_confirm_ms=300, panel_zones={"fire": "Tầng 1-5"})
    online(observer, vb)
    st = vb.request("status")
    assert st["panel"] == {"inputs": {"fire": "normal", "fault": "normal"}, "ack": False}, st
    assert vb.request("panel", input="fire", ohms=1000)["ok"]  # the relay puts 1 kΩ across the 4.7 kΩ EOL
    alarm = wait_event(observer, vb, lambda e: e["type"] == "alarm")
    assert alarm["cause"] == "panel" and alarm["data"] == {"input": "fire", "zone": "Tầng 1-5"}
    vb.console.wait_for(lambda m: m.get("ev") == "indicator" and m.get("state") == "alarm", 10)
    mark = vb.console.mark()
    ack(observer, vb, alarm["id"], "stored")
    ack(observer, vb, alarm["id"], "accepted", incident="114-HN-000007")
    vb.console.wait_for(lambda m: m.get("ev") == "output" and m.get("name") == "ack" and m.get("on") is True,
                        10, since=mark)
    assert vb.request("status")["panel"]["ack"] is True
    vb.request("panel", input="fire", state="normal")
    restore = wait_event(observer, vb, lambda e: e["type"] == "restore")
    assert restore["cause"] == "panel" and restore["ref"] == alarm["id"]
    vb.console.wait_for(lambda m: m.get("ev") == "output" and m.get("on") is False, 10, since=mark)
    assert [e["type"] for e in map(body_of, observer.events("tx-a-0001"))] == ["alarm", "restore"]


def test_a_relay_closed_shorter_than_the_confirmation_sends_nothing(make_board, observer):
    vb = make_board("tx-a-0002", board=BOARD, panel_confirm_ms=3000)
    online(observer, vb)
    vb.request("panel", input="fire", state="active")
    time.sleep(1)  # a negative check: well inside the 3 s confirmation
    vb.request("panel", input="fire", state="normal")
    time.sleep(3.5)  # ... and past it: a glitch counted would have been raised by now
    assert observer.events("tx-a-0002") == []
    assert vb.request("status")["last_event"] is None


def test_fault_relay_is_a_panel_fault_and_its_restore(make_board, observer):
    vb = make_board("tx-a-0003", board=BOARD, panel_confirm_ms=300)
    online(observer, vb)
    vb.request("panel", input="fault", state="active")
    fault = wait_event(observer, vb, lambda e: e["type"] == "fault")
    assert fault["cause"] == "panel-fault" and fault["data"]["input"] == "fault"
    vb.request("panel", input="fault", state="normal")
    restore = wait_event(observer, vb, lambda e: e["type"] == "restore")
    assert restore["cause"] == "panel-fault" and restore["ref"] == fault["id"]
    assert vb.request("indicator")["event"] is None  # a fault is never shown as an alarm


def test_cut_and_shorted_lines_are_wiring_faults_with_restores(make_board, observer):
    vb = make_board("tx-a-0004", board=BOARD, panel_confirm_ms=300)
    online(observer, vb)
    vb.request("panel", input="fire", ohms=None)  # the line cut
    cut = wait_event(observer, vb, lambda e: e["type"] == "fault")
    assert cut["cause"] == "line-open" and cut["data"]["input"] == "fire"
    assert vb.request("status")["panel"]["inputs"]["fire"] == "open"
    vb.request("panel", input="fire", state="normal")
    mended = wait_event(observer, vb, lambda e: e["type"] == "restore")
    assert (mended["cause"], mended["ref"]) == ("line-open", cut["id"])
    vb.request("panel", input="fire", ohms=0)
    short = wait_event(observer, vb, lambda e: e["type"] == "fault" and e["id"] != cut["id"])
    assert short["cause"] == "line-short"
    vb.request("panel", input="fire", state="normal")
    cleared = wait_event(observer, vb, lambda e: e["type"] == "restore" and e["id"] != mended["id"])
    assert (cleared["cause"], cleared["ref"]) == ("line-short", short["id"])
    types = [body_of(f)["type"] for f in observer.events("tx-a-0004")]
    assert "alarm" not in types  # a wiring fault is never an alarm


def test_a_reboot_with_the_relay_closed_raises_no_second_alarm(make_board, observer):
    vb = make_board("tx-a-0005", board=BOARD, panel_confirm_ms=2000)
    online(observer, vb)
    vb.request("panel", input="fire", state="active")
    alarm = wait_event(observer, vb, lambda e: e["type"] == "alarm")
    vb.power_cut()  # nothing but the flash survives; the simulated line starts normal again
    vb.request("panel", input="fire", state="active")  # well within the 2 s confirmation of a change
    assert vb.request("status")["panel"]["inputs"]["fire"] == "active"  # the open alarm, from flash
    time.sleep(3)  # a negative check: past the confirmation, a second alarm would be on its way
    vb.request("panel", input="fire", state="normal")
    restore = wait_event(observer, vb, lambda e: e["type"] == "restore")
    assert restore["cause"] == "panel" and restore["ref"] == alarm["id"]
    alarms = {body_of(f)["id"] for f in observer.events("tx-a-0005") if body_of(f)["type"] == "alarm"}
    assert alarms == {alarm["id"]}  # the one alarm (resent after the power cut: the same id)


def test_periodic_test_event(make_board, observer):
    vb = make_board("tx-a-0006", board="virtual-panic", test_s=4)
    first = wait_event(observer, vb, lambda e: e["type"] == "test")
    second = wait_event(observer, vb, lambda e: e["type"] == "test" and e["id"] != first["id"])
    assert first["cause"] == second["cause"] == "periodic" and first["data"] == {"test_s": 4}
    gap = second["up"] - first["up"]
    assert 3000 <= gap <= 6000, gap


def test_a_board_without_panel_inputs_refuses_the_command(make_board):
    vb = make_board("tx-a-0007", board="virtual-panic")
    reply = vb.console.ask("panel", input="fire", state="active")
    assert reply["ok"] is False and "no panel inputs" in reply["error"]
    assert "panel" not in vb.request("status")

"""A virtual board (real MicroPython) and a real Mosquitto: the press-to-alarm path of issue #2."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from integration.support import Observer, body_of

from firmware import protocol_host as protocol
from stack.procs import wait_until
from stack.vboard import VirtualBoard


def verify(frame: bytes, key_hex: str) -> dict:
    body, sig = frame.split(b"\n", 1)
    want = hmac.new(bytes.fromhex(key_hex), body, hashlib.sha256).hexdigest().encode()
    assert hmac.compare_digest(sig, want), "event signature does not verify with the device key"
    return json.loads(body)


def ack(observer, vb, eid, stage, **extra):
    body = json.dumps({"v": 1, "id": eid, "stage": stage, "ts": int(time.time()), **extra}, separators=(",", ":")).encode()
    sig = hmac.new(bytes.fromhex(vb.cfg["key"]), body, hashlib.sha256).hexdigest().encode()
    observer.publish(protocol.topic(vb.cfg['dev'], "ack"), body + b"\n" + sig)


def wait_indicator(vb, state, since=0, timeout=10):
    return vb.console.wait_for(lambda m: m.get("ev") == "indicator" and m.get("state") == state, timeout, since=since)


def test_press_sends_signed_alarm_with_location(make_board, observer):
    vb = make_board("hn-a-0001", lat=21.0285, lon=105.8048, acc=12)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0001", "status") and b'"online"' in m[1])
    vb.request("press", ms=100)
    t, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0001", "event"))
    ev = verify(frame, vb.cfg["key"])
    assert ev["type"] == "alarm" and ev["cause"] == "button" and ev["dev"] == "hn-a-0001"
    boot = vb.console.wait_for("boot", 5, since=0)
    assert protocol.valid_epoch(ev["ep"]) and ev["ep"] == boot["ep"]  # this install's, as the console said
    assert ev["id"] == f"hn-a-0001-{ev['ep']}-00000001" and ev["ctr"] == 1
    assert ev["loc"] == {"lat": 21.0285, "lon": 105.8048, "acc": 12, "src": "fixed", "age": 0}
    assert isinstance(ev["ts"], int) and abs(ev["ts"] - time.time()) < 60
    wait_indicator(vb, "sent")
    status = vb.request("status")
    assert status["last_event"] == ev["id"] and status["mqtt"] == "connected"


def test_birth_is_retained_with_version_and_board(make_board, broker, observer):
    make_board("hn-a-0002")
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0002", "status"))  # the birth has been published
    late = Observer(broker, topics=(protocol.every("status"),))  # subscribes after the birth
    try:
        t, payload, retained = late.wait(lambda m: m[0] == protocol.topic("hn-a-0002", "status"))
        birth = json.loads(payload)
        assert retained and birth["state"] == "online" and birth["board"] == "virtual"
        assert birth["fw"] == "0.1.0" and birth["boot"] == 1
    finally:
        late.close()


def test_acks_move_indicator_and_clear_outbox(make_board, observer):
    vb = make_board("hn-a-0003")
    vb.request("press", ms=100)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0003", "event"))
    eid = body_of(frame)["id"]
    wait_indicator(vb, "sent")
    assert vb.request("outbox")["ids"] == [eid]
    mark = vb.console.mark()
    ack(observer, vb, eid, "stored")
    wait_indicator(vb, "stored", mark)
    assert vb.request("outbox")["ids"] == []
    ack(observer, vb, eid, "accepted", incident="114-HN-000042")
    wait_indicator(vb, "accepted", mark)
    ind = vb.request("indicator")
    assert ind["state"] == "accepted" and ind["incident"] == "114-HN-000042"


def test_forged_ack_is_ignored(make_board, observer):
    vb = make_board("hn-a-0004")
    vb.request("press", ms=100)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0004", "event"))
    eid = body_of(frame)["id"]
    mark = vb.console.mark()
    body = json.dumps({"v": 1, "id": eid, "stage": "accepted", "incident": "FAKE"}).encode()
    observer.publish(protocol.topic("hn-a-0004", "ack"), body + b"\n" + b"0" * 64)
    vb.console.wait_for(lambda m: m.get("ev") == "rejected", 10, since=mark)
    assert vb.request("indicator")["state"] == "sent"
    assert vb.request("outbox")["ids"] == [eid]


def test_failed_stage_shows_distinctly(make_board, observer):
    vb = make_board("hn-a-0005")
    vb.request("press", ms=100)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0005", "event"))
    ack(observer, vb, body_of(frame)["id"], "failed", reason="intake refused")
    wait_indicator(vb, "failed")


def test_alarm_during_broker_outage_arrives_once(make_board, observer, broker):
    vb = make_board("hn-a-0006")
    broker.stop()
    vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "down", 30)
    vb.request("press", ms=100)
    vb.console.wait_for(lambda m: m.get("ev") == "event", 5)
    time.sleep(1)  # a deliberate gap: the outage lasts while the board tries to send
    broker.start()
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0006", "event"), timeout=40)
    time.sleep(2)  # a negative check: a second copy (outbox and client both resending) would come by now
    ids = [body_of(f)["id"] for f in observer.events("hn-a-0006")]
    assert ids == [protocol.event_id("hn-a-0006", 1, body_of(frame)["ep"])]


def test_power_cut_before_delivery_resends_same_event(make_board, observer, broker):
    vb = make_board("hn-a-0007")
    broker.stop()
    vb.request("press", ms=100)
    ev = vb.console.wait_for(lambda m: m.get("ev") == "event", 5)
    vb.power_cut()  # SIGKILL: nothing but the flash survives
    assert vb.request("status")["boot"] == 2
    broker.start()
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0007", "event"), timeout=40)
    assert body_of(frame)["id"] == ev["id"]
    # a new event after the reboot continues the counter: no id is ever reused
    vb.request("press", ms=100)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0007", "event") and body_of(m[1])["ctr"] == 2, timeout=15)


def test_whole_board_killed_and_started_again_on_same_flash(make_board, observer, broker):
    vb = make_board("hn-a-0008")
    broker.stop()
    vb.request("press", ms=100)
    ev = vb.console.wait_for(lambda m: m.get("ev") == "event", 5)
    vb.kill()
    broker.start()
    vb2 = VirtualBoard(vb.flash, log=vb.log)
    try:
        vb2.start()
        _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0008", "event"), timeout=40)
        assert body_of(frame)["id"] == ev["id"]
    finally:
        vb2.stop()


def test_long_hold_after_alarm_sends_cancel(make_board, observer):
    vb = make_board("hn-a-0009", hold_cancel_ms=1000)
    vb.request("press", ms=100)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0009", "event"))
    alarm = body_of(frame)
    vb.console.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 5)  # the first press is over
    vb.request("press", ms=1500)
    _, frame2, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0009", "event") and body_of(m[1])["type"] == "cancel")
    cancel = verify(frame2, vb.cfg["key"])
    assert cancel["ref"] == alarm["id"] and cancel["ctr"] == alarm["ctr"] + 1
    wait_indicator(vb, "cancelled")


def test_short_glitch_is_not_a_press(make_board, observer):
    vb = make_board("hn-a-0010")
    vb.request("press", ms=5)  # shorter than the debounce time
    time.sleep(1)  # a negative check: a press would have raised its alarm by now
    assert observer.events("hn-a-0010") == []
    assert vb.request("status")["last_event"] is None


def test_network_loss_then_return_delivers(make_board, observer):
    vb = make_board("hn-a-0011")
    vb.request("net", up=False)
    vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "down", 10)
    vb.request("press", ms=100)
    vb.console.wait_for(lambda m: m.get("ev") == "event", 5)
    time.sleep(1)  # a negative check: the alarm is raised, and nothing reaches the broker without a network
    assert observer.events("hn-a-0011") == []
    vb.request("net", up=True)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0011", "event"), timeout=40)


@pytest.mark.parametrize("broken", ["{not json", json.dumps({"dev": "x"}), ""])
def test_broken_config_is_a_clear_fault_not_a_crash_loop(tmp_path, broken):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "device.json").write_text(broken)
    vb = VirtualBoard(flash)
    try:
        vb.start()
        fault = vb.console.wait_for(lambda m: m.get("ev") == "fault", 10)
        assert fault["cause"] == "config" and "device config" in fault["detail"]
        time.sleep(1)  # a negative check: a crash loop would have rebooted the board by now
        st = vb.request("status")
        assert st["fault"][0] == "config" and st["indicator"] == "fault" and st["boot"] == 1
        assert vb.proc.poll() is None
    finally:
        vb.stop()


def test_scenario_within_64k_data_heap(make_board, observer):
    # The cap covers the loaded bytecode too (~100 KB with the sensor stack on the unix port; in
    # flash on an ESP32 with frozen modules); the runtime data on top of it must stay within 64 KB.
    vb = make_board("hn-a-0012", heap="192K", hold_cancel_ms=800)
    for _ in range(3):
        mark = vb.console.mark()
        vb.request("press", ms=80)
        vb.console.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 5, since=mark)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0012", "event"))
    vb.request("press", ms=1200)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0012", "event") and body_of(m[1])["type"] == "cancel")
    for f in observer.events("hn-a-0012"):
        ack(observer, vb, body_of(f)["id"], "stored")
    wait_until(lambda: vb.request("outbox")["ids"] == [], 10, what="outbox emptied by the acks")
    heap = vb.request("heap")
    assert heap["base"] > 0 and 0 < heap["data_peak"] <= 64 * 1024, heap
    assert heap["peak"] <= 192 * 1024
    assert vb.request("outbox")["ids"] == []
    assert vb.proc.poll() is None


# The firmware in ROM (as an ESP32 build with ROMFS or frozen modules), everything else in the heap of
# the 64-bit unix port, capped at 72 KB: one module per job costs the panic button about 4 KB more
# here than the one-module app did at 64 KB (docs/performance.md, "Firmware memory"; the chip's own
# figure comes from the emulated ESP32).
PANIC_HEAP = "72K"


def test_panic_button_whole_scenario_in_a_capped_heap(make_board, observer, broker):
    vb = make_board("hn-a-0013", heap=PANIC_HEAP, board="virtual-panic", hold_cancel_ms=800)
    assert vb.request("status")["sensors"] == {}
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0013", "status") and b'"online"' in m[1])
    # press -> a signed alarm; ack -> the indicator follows
    vb.request("press", ms=80)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0013", "event"))
    alarm = verify(frame, vb.cfg["key"])
    vb.console.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", 5)
    mark = vb.console.mark()
    ack(observer, vb, alarm["id"], "stored")
    wait_indicator(vb, "stored", since=mark)
    # a long hold -> cancel, referring to the alarm
    vb.request("press", ms=1200)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0013", "event") and body_of(m[1])["type"] == "cancel")
    assert verify(frame, vb.cfg["key"])["ref"] == alarm["id"]
    ack(observer, vb, body_of(frame)["id"], "stored")
    vb.console.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up" and m["ms"] > 1000, 5)
    # broker down -> press -> SIGKILL before delivery -> same flash, broker back: the same event, once
    broker.stop()
    vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "down", 30)
    vb.request("press", ms=80)
    ev = vb.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm" and m["id"] != alarm["id"], 5)
    vb.power_cut()
    broker.start()
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0013", "event") and body_of(m[1])["id"] == ev["id"], timeout=40)
    ack(observer, vb, ev["id"], "stored")
    wait_until(lambda: vb.request("outbox")["ids"] == [], 10, what="outbox emptied by the ack")
    assert [body_of(f)["id"] for f in observer.events("hn-a-0013")].count(ev["id"]) == 1
    heap = vb.request("heap")
    cap = int(PANIC_HEAP[:-1]) * 1024
    assert 0 < heap["base"] < heap["peak"] <= cap and heap["alloc"] + heap["free"] <= cap, heap
    assert vb.request("outbox")["ids"] == []
    assert vb.proc.poll() is None
    assert b"MemoryError" not in vb.log.read_bytes(), "the heap ran out somewhere in the scenario"


def test_a_full_heap_delays_the_alarm_and_loses_nothing(make_board, observer):
    # A long debounce, so the press's edge comes after the heap is taken, whatever the machine's load.
    vb = make_board("hn-a-0017", heap=PANIC_HEAP, board="virtual-panic", debounce_ms=300)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0017", "status") and b'"online"' in m[1])
    mark = vb.console.mark()
    vb.console.send({"cmd": "press", "ms": 800})
    vb.console.send({"cmd": "hog", "ms": 1500, "tag": "hog"})
    hog = vb.console.wait_for(lambda m: m.get("re") == "hog", 5, since=mark)
    assert hog["ok"], hog
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0017", "event"), timeout=30)
    alarm = verify(frame, vb.cfg["key"])
    assert (alarm["type"], alarm["cause"]) == ("alarm", "button")
    assert alarm["ctr"] == 1, alarm  # the press was owed, not dropped, and its retries used up no numbers
    ack(observer, vb, alarm["id"], "stored")
    wait_indicator(vb, "stored", since=mark)
    heap = vb.request("heap")
    assert heap["lowmem"] >= 1, heap  # the heap was really full while the button was down
    time.sleep(1)  # a negative check: a press counted twice would have sent a second alarm by now
    assert [body_of(f)["type"] for f in observer.events("hn-a-0017")] == ["alarm"]
    assert vb.request("outbox")["ids"] == []
    assert vb.proc.poll() is None
    assert b"Traceback" not in vb.log.read_bytes(), "a task died of the full heap"


def test_firmware_in_rom_keeps_its_bytecode_out_of_the_heap(make_board, observer):
    in_rom = make_board("hn-a-0015", board="virtual-panic")
    in_heap = make_board("hn-a-0016", board="virtual-panic", rom=False)
    for vb in (in_rom, in_heap):
        dev = vb.cfg["dev"]
        observer.wait(lambda m, d=dev: m[0] == protocol.topic(d, "status") and b'"online"' in m[1])
        vb.request("press", ms=80)
        observer.wait(lambda m, d=dev: m[0] == protocol.topic(d, "event"))
    rom, heap = in_rom.request("heap"), in_heap.request("heap")
    # the panic button's .mpy bytecode is about 25 KB of heap on the unix port (50 vs 75 KB at boot)
    assert heap["base"] - rom["base"] > 10 * 1024, (rom, heap)


def test_broker_out_of_reach_restarts_the_link_then_reboots_and_says_why(make_board, observer, broker):
    """A link that says it is up but reaches no broker: the interface is restarted, then the device
    reboots; its alarm waits in flash, and once back it tells the operator why it rebooted."""
    vb = make_board("hn-a-0010", net_restart_s=10, net_reboot_s=30)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0010", "status") and b'"online"' in m[1])
    broker.stop()
    vb.request("press", ms=100)
    ev = vb.console.wait_for("event", 10)
    restart = vb.console.wait_for(lambda m: m.get("ev") == "net" and m.get("action") == "restart", 30)
    assert restart["outage_s"] >= 10 and "ECONNREFUSED" in restart["detail"]
    again = vb.console.wait_for(lambda m: m.get("ev") == "net" and m.get("outage_s", 0) >= 20, 20)
    assert again["action"] == "restart"  # every net_restart_s, until the reboot
    reboot = vb.console.wait_for(lambda m: m.get("ev") == "net" and m.get("action") == "reboot", 40)
    assert reboot["outage_s"] >= 30
    boot = vb.console.wait_for(lambda m: m.get("ev") == "boot" and m.get("boot") == 2, 30)
    assert boot["reset_cause"] in ("soft", "power")
    broker.start()
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0010", "event") and body_of(m[1])["id"] == ev["id"],
                  timeout=40)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0010", "event")
                                and body_of(m[1])["type"] == "fault", timeout=20)
    fault = body_of(frame)
    assert fault["cause"] == "network" and fault["data"]["detail"].startswith("rebooted: no broker for ")
    # said once: after a further reboot with the broker reachable the next event is the next
    # counter, so no second network fault was raised
    vb.request("reboot")
    vb.console.wait_for(lambda m: m.get("ev") == "boot" and m.get("boot") == 3, 30)
    mark = vb.console.mark()
    vb.request("press", ms=100)
    # the same install across the reboots: the same epoch, the counter going on
    assert vb.console.wait_for("event", 10, since=mark)["id"] == protocol.event_id("hn-a-0010", 3, fault["ep"])


def test_the_indicator_after_a_reboot_shows_what_it_showed_before(make_board, observer):
    vb = make_board("hn-a-0020")
    vb.request("press", ms=100)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0020", "event"))
    eid = body_of(frame)["id"]
    ack(observer, vb, eid, "failed", reason="intake refused")
    wait_indicator(vb, "failed")
    vb.power_cut()  # nothing but the flash survives
    ind = vb.request("indicator")
    assert ind["state"] == "failed" and ind["event"] == eid  # the occupant still sees: call 114
    mark = vb.console.mark()
    ack(observer, vb, eid, "accepted", incident="114-HN-77")  # accepted late, after the reboot
    wait_indicator(vb, "accepted", since=mark)
    vb.power_cut()
    ind = vb.request("indicator")
    assert (ind["state"], ind["event"], ind["incident"]) == ("accepted", eid, "114-HN-77")


def test_an_outbox_full_of_alarms_is_a_fault_event_and_its_restore_follows(make_board, observer, broker):
    vb = make_board("hn-a-0021", outbox_max=4, cancel_window_s=0)
    broker.stop()  # nothing leaves: the alarms pile up on flash
    vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "down", 30)
    mark = vb.console.mark()
    for i in range(4):
        vb.request("press", ms=60)
        # this press's event and its release, before the next press (the rig's presses would merge)
        vb.console.wait_for(lambda m, i=i: len(vb.console.find("event", since=mark)) > i, 5)
        vb.console.wait_for(lambda m, i=i: len(vb.console.find("button", since=mark, state="up")) > i, 5)
    fault = vb.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "fault", 5, since=mark)
    assert fault["cause"] == "outbox"
    broker.start()
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0021", "event")
                                and body_of(m[1])["type"] == "fault", timeout=40)
    assert "outbox full of alarms: 4 waiting" in body_of(frame)["data"]["detail"]
    for f in observer.events("hn-a-0021"):  # the bridge's part: each stored
        ack(observer, vb, body_of(f)["id"], "stored")
    restore = vb.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "restore", 10, since=mark)
    assert restore["cause"] == "outbox"
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0021", "event")
                                and body_of(m[1])["type"] == "restore", timeout=20)
    assert body_of(frame)["ref"] == fault["id"]
    assert vb.request("outbox")["lost"] == 0


def test_every_loop_survives_a_failing_step_and_the_alarm_still_goes(make_board, observer):
    # Each step the rig breaks raises OSError, as a pin, flash or Wi-Fi driver error does on the chip.
    vb = make_board("hn-a-0019", heap=PANIC_HEAP, board="virtual-panic", hold_cancel_ms=5000)
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0019", "status") and b'"online"' in m[1])
    mark = vb.console.mark()
    for at, n in (("flash", 2), ("watchdog", 3), ("indicator", 3), ("button", 50)):
        reply = vb.request("fail", at=at, n=n)
        assert (reply["ok"], reply["at"], reply["n"]) == (True, at, n), reply
    vb.request("press", ms=1500)  # held through the failing reads: the press is seen once they stop
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0019", "event"), timeout=30)
    alarm = verify(frame, vb.cfg["key"])
    assert (alarm["type"], alarm["cause"]) == ("alarm", "button")
    told = {m["where"]: m for m in vb.console.find("error", since=mark)}
    assert {"button", "watchdog", "send"} <= set(told), told
    assert "injected failure at button" in told["button"]["error"]
    # bounded: one line per loop in ten seconds, not one per failed 10 ms pass
    assert len(vb.console.find("error", since=mark)) <= 4
    ack(observer, vb, alarm["id"], "stored")
    wait_indicator(vb, "stored", since=mark)
    status = vb.request("status")
    assert status["errors"] >= 2 + 3 + 50, status
    assert status["mqtt"] == "connected" and vb.request("outbox")["ids"] == []
    assert not vb.console.find("reset", since=mark), "the watchdog reset the board"
    assert vb.proc.poll() is None
    assert b"Traceback" not in vb.log.read_bytes(), "a task died of a failing step"


def test_a_write_the_flash_refuses_goes_from_ram_and_the_operator_hears_of_it(make_board, observer):
    vb = make_board("hn-a-0022")
    observer.wait(lambda m: m[0] == protocol.topic("hn-a-0022", "status") and b'"online"' in m[1])
    vb.request("fail", at="outbox", n=1)
    vb.request("press", ms=80)
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0022", "event"))
    alarm = body_of(frame)
    assert alarm["type"] == "alarm"
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0022", "event") and body_of(m[1])["type"] == "fault")
    fault = body_of(frame)
    assert fault["cause"] == "outbox" and "flash refused an event: sending from RAM (1 held, 0 lost)" in fault["data"]["detail"]
    _, frame, _ = observer.wait(lambda m: m[0] == protocol.topic("hn-a-0022", "event") and body_of(m[1])["type"] == "restore")
    assert body_of(frame)["ref"] == fault["id"] and "0 events lost" in body_of(frame)["data"]["detail"]
    assert alarm["id"] in vb.request("outbox")["ids"]  # from RAM, until the bridge stores it
    for f in observer.events("hn-a-0022"):
        ack(observer, vb, body_of(f)["id"], "stored")
    wait_until(lambda: vb.request("outbox")["ids"] == [], 10, what="outbox emptied by the acks")
    assert [body_of(f)["id"] for f in observer.events("hn-a-0022")].count(alarm["id"]) == 1

"""The installer's image on an emulated ESP32 (Espressif's QEMU, stock MicroPython 1.24): boot, Wi-Fi,
the installer's verify, alarm to the 114 intake and back, outage, power cut, watchdog. One board is
booted for the module and goes through the scenarios in order (a boot costs about half a minute of
one core). TLS on the chip: test_esp32_qemu_tls.py. Skips, with how to install the emulator, where
there is none."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from firmware import protocol_host as protocol
from stack.chip import ChipSystem
from stack.console import ConsoleError
from stack.esp32_qemu import EmulatorMissing, find_emulator
from stack.observer import Observer
from stack.procs import child_env, wait_until

DEV = "qemu-chip-01"
# Waits on the chip: a LittleFS write there can hold the event loop for seconds (every flash operation
# costs the emulator 15-35 ms), and an MQTT write caught in such a stall times out and reconnects.
CHIP_S = 120
# A network reboot on the emulator and the power cycle after it (EmulatedBoard.revive_network): the
# link watch's net_reboot_s, a boot, the reconnect.
REVIVAL_S = 300


def settled(board) -> None:
    """The chip is up and online: what a scenario starts from, whatever the one before left (a
    reboot still booting would otherwise be taken for this scenario's)."""
    def online() -> bool:
        try:
            return board.request("status", timeout=30).get("mqtt") == "connected"
        except ConsoleError:  # booting: the console is not read yet
            return False

    wait_until(online, REVIVAL_S, interval=2, what="the chip online")


def body_of(frame: bytes) -> dict:
    return json.loads(bytes(frame).split(b"\n", 1)[0])


@pytest.fixture(scope="module")
def emulator():
    try:
        return find_emulator()
    except EmulatorMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def system(emulator, tmp_path_factory):
    """Broker, 114 intake and bridge on loopback; one device provisioned for esp32-devkitc, written by
    the installer's `flash` over the emulated ROM loader, whose broker address the emulator forwards
    to the test's broker and nowhere else."""
    chip = ChipSystem(tmp_path_factory.mktemp("chip"), DEV, emulator=emulator)
    try:
        chip.up()
        yield chip.stack, chip.board, chip.observer, chip
    finally:
        chip.down()


# A short press on the emulator: long enough that a flash write holding up the chip's loop (each costs
# a few hundred ms there) cannot swallow it whole, and far from the 3 s hold that cancels.
SHORT_MS = 400


def press(board, ms: int) -> int:
    """A rig press, waited out: the next one must not land while this one is still down (a flash write
    on the emulator takes long enough to stretch a short press)."""
    mark = board.console.mark()
    board.request("press", ms=ms, timeout=15)
    board.console.wait_for(lambda m: m.get("ev") == "button" and m.get("state") == "up", CHIP_S, since=mark)
    return mark


def events(obs: Observer, type_: str | None = None) -> list[dict]:
    t = protocol.topic(DEV, "event")
    out = [body_of(m.payload) for m in list(obs.msgs) if m.topic == t]
    return [b for b in out if type_ is None or b["type"] == type_]


def test_the_installers_flash_writes_the_image_over_the_rom_loader(system):
    st, board, obs, chip = system
    out = chip.flash_output
    assert "Hash of data verified" in out and f"flashed {DEV}" in out
    assert chip.flash_identical, "what esptool wrote differs from the image of flash --merge"


def test_boots_the_installers_image_and_comes_online_over_wifi(system):
    st, board, obs, chip = system
    boot = board.console.wait_for(lambda m: m.get("ev") == "boot", 5)
    assert (boot["dev"], boot["board"], boot["reset_cause"]) == (DEV, "esp32-devkitc", "power")
    board.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 90)
    birth = obs.wait(lambda m: m.topic == protocol.topic(DEV, "status") and b'"online"' in m.payload, 30)
    assert json.loads(birth.payload)["board"] == "esp32-devkitc"
    status = board.request("status", timeout=15)
    assert status["net"] is True and status["mqtt"] == "connected" and status["test_rig"] is True
    # the emulator has no ADC, BME680 or GPS: each is a fault event, and the loops go on
    faults = board.console.wait_for(lambda m: m.get("ev") == "event" and m.get("cause") == "gps", CHIP_S)
    sensors = board.request("status", timeout=15)["sensors"]
    assert faults and sorted(sensors) == ["bme680", "gps", "smoke"]
    assert sensors["gps"] == "gps receiver silent" and sensors["bme680"].startswith("bme680: "), sensors
    # what the chip wrote is on its flash, read back from the emulator's flash file
    files = board.files()
    assert "/device.json" in files and "/lib/app.mpy" in files


def test_the_installers_verify_checks_the_chip_over_its_console(system):
    """`baochay-provision verify` as an installer runs it after flashing, on the chip's console port.
    Everything it checks passes but two: the emulator has no BME680, GPS or smoke chamber, and verify
    must say so (the sensors' faults, and a self-test that fails), not call the device ready."""
    st, board, obs, chip = system
    with board.console_handed_over() as port:
        r = subprocess.run([sys.executable, "-m", "provisioning.cli", "verify", "--devices-dir",
                            str(chip.dir / "devices"), "--device", DEV, "--port", port, "--net-timeout", "120",
                            "--test-timeout", "90", "--reply-timeout", "20", "--bridge", "--bridge-timeout", "90"],
                           capture_output=True, text=True, timeout=600, env=child_env())
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if "  pass  " in line or "  FAIL  " in line}
    assert r.returncode == 1, r.stdout + r.stderr
    for check in ("console", "device", "firmware", "board", "no", "network", "broker", "bridge"):
        assert "  pass  " in rows.get(check, ""), (check, r.stdout)
    assert "  FAIL  " in rows["sensors"] and "gps: gps receiver silent" in rows["sensors"], r.stdout
    assert "  FAIL  " in rows["self-test"] and "heater" in rows["self-test"], r.stdout
    assert "FAIL: 2 of 10 checks failed: sensors, self-test" in r.stdout
    # the self-test event goes on to 114; its last ack is written to the chip's flash, which holds
    # the emulated chip's loop up longer than the next test's short press: let it land first
    test_id = [b for b in events(obs, "test")][-1]["id"]
    obs.wait(lambda m: m.topic == protocol.topic(DEV, "ack") and test_id.encode() in m.payload
             and b'"accepted"' in m.payload, CHIP_S)
    board.request("status", timeout=60)  # a round trip through the console: the loop is free again
    wait_until(lambda: board.request("outbox", timeout=60)["ids"] == [], CHIP_S, what="the chip's outbox emptied")


def test_press_reaches_114_and_the_incident_id_comes_back_to_the_chip(system):
    st, board, obs, chip = system
    mark = press(board, SHORT_MS)
    ev = board.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm", 20, since=mark)
    acked = board.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("id") == ev["id"]
                                   and m.get("stage") == "accepted", CHIP_S, since=mark)
    assert acked["incident"]
    ind = board.request("indicator", timeout=15)
    assert (ind["state"], ind["event"], ind["incident"]) == ("accepted", ev["id"], acked["incident"])
    alarm = [b for b in events(obs, "alarm") if b["id"] == ev["id"]]
    # at least once: a connection the emulated Wi-Fi drops is followed by a resend of the same frame
    assert alarm and all(b == alarm[0] for b in alarm), alarm
    assert alarm[0]["cause"] == "button" and alarm[0]["loc"]["src"] == "fixed"
    wait_until(lambda: board.request("outbox", timeout=60)["ids"] == [], 30, what="the chip's outbox emptied")


def test_a_long_hold_cancels_the_alarm(system):
    st, board, obs, chip = system
    alarm_id = board.request("indicator", timeout=15)["event"]
    mark = press(board, 3800)
    ev = board.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "cancel", CHIP_S, since=mark)
    obs.wait(lambda m: m.topic == protocol.topic(DEV, "event") and body_of(m.payload)["id"] == ev["id"], CHIP_S)
    cancel = [b for b in events(obs, "cancel") if b["id"] == ev["id"]][0]
    assert cancel["ref"] == alarm_id


@pytest.mark.timeout(900)
def test_broker_outage_presses_wait_in_flash_and_arrive_once_in_order(system):
    st, board, obs, chip = system
    broker = st._broker()
    mark = board.console.mark()
    broker.stop()
    board.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "down", 60, since=mark)
    ids = []
    for _ in range(2):
        m2 = press(board, SHORT_MS)
        ids.append(board.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm", 20,
                                          since=m2)["id"])
        press(board, 3800)  # cancel it, so the next press is a new alarm
        board.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "cancel", CHIP_S, since=m2)
    queued = board.request("outbox", timeout=15)["ids"]
    assert set(ids) <= set(queued) and len(queued) >= 4, queued
    # the power goes while the events wait: they are on the chip's flash, not in RAM
    board.power_cut()
    on_flash = [p for p in board.files() if p.startswith("/outbox/")]
    assert len(on_flash) >= 4, on_flash
    mark = board.console.mark()
    broker.start()
    # Each one stored by the bridge, which the chip hears as its ack. The emulated Wi-Fi can die in
    # the burst after the reconnect (docs/hil.md): then the link watch reboots the chip, the board
    # power-cycles it, and the events still on its flash go after that boot: allow for one round.
    for eid in queued:
        board.console.wait_for(lambda m, e=eid: m.get("ev") == "ack" and m.get("id") == e
                               and m.get("stage") == "stored", REVIVAL_S, since=mark)
    left = board.request("outbox", timeout=60)["ids"]  # (the sensor faults of the new boot may still be going)
    assert not set(left) & set(queued), left
    # At least once, in counter order: a resend (a PUBACK lost to a reconnect on the slow emulator,
    # or the ack timeout) is the same signed frame again, which the bridge acks without storing twice.
    t = protocol.topic(DEV, "event")
    frames: dict[str, set[bytes]] = {}
    first: list[str] = []
    for m in list(obs.msgs):
        if m.topic == t and body_of(m.payload)["id"] in queued:
            eid = body_of(m.payload)["id"]
            if eid not in frames:
                first.append(eid)
            frames.setdefault(eid, set()).add(bytes(m.payload))
    assert first == sorted(queued, key=protocol.ctr_of), first
    assert all(len(f) == 1 for f in frames.values()), "one event id, two different frames"


@pytest.mark.timeout(900)
def test_a_hung_main_loop_is_reset_by_the_hardware_watchdog(system):
    st, board, obs, chip = system
    settled(board)
    mark = board.console.mark()
    board.console.send({"cmd": "hang"})
    boot = board.console.wait_for(lambda m: m.get("ev") == "boot", 120, since=mark)
    assert boot["reset_cause"] == "wdt", boot
    # The chip may still be sending the outage's backlog from its flash, slow on the emulator: a loop
    # held up by it has been seen reset by the watchdog a second time before the fault went out.
    obs.wait(lambda m: m.topic == protocol.topic(DEV, "event") and body_of(m.payload)["type"] == "fault"
             and body_of(m.payload)["cause"] == "watchdog", REVIVAL_S)

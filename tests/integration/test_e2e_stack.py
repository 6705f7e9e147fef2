"""End to end: broker, bridge and 114 intake as real processes, virtual boards on ptys (issue #3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from stack.run import SITES, Stack


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path / "stack", 2, keep_consoles=True)
    try:
        s.up()
        yield s
    finally:
        s.down()


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_press_reaches_intake_with_location_and_address(stack):
    vb = stack.boards[1]  # the Đắk Nông board
    site = SITES[1]
    mark = vb.console.mark()
    vb.request("press", ms=100)
    ev = vb.console.wait_for(lambda m: m.get("ev") == "event", 10, since=mark)
    acked = vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 30, since=mark)
    assert acked["id"] == ev["id"] and acked["incident"]
    vb.console.wait_for(lambda m: m.get("ev") == "indicator" and m.get("state") == "accepted", 10, since=mark)
    ind = vb.request("indicator")
    assert ind["state"] == "accepted" and ind["incident"] == acked["incident"]
    assert vb.request("outbox")["ids"] == []

    incident = stack.intake.incident(acked["incident"])
    text = json.dumps(incident, ensure_ascii=False)
    assert site["site"]["address"] in text and site["site"]["building"] in text
    assert str(site["lat"]) in text and str(site["lon"]) in text
    assert "ld-market-01" in text
    # what 114 sizes a response by: the facility record and the 2025 units' official codes
    assert (incident["ward"], incident["ward_code"]) == ("Phường Bắc Gia Nghĩa", "24611")
    assert incident["province_code"] == "68"  # Lâm Đồng
    f = incident["facility"]
    assert (f["id"], f["type"], f["floors_above"], f["occupancy_day"], f["occupancy_night"]) == (
        site["site"]["building"], "market", 2, 2000, 20)
    assert f["hazards"] == ["gas", "fuel"] and f["water_sources"] == ["Hồ Gia Nghĩa, 400 m"]
    assert [c["phone"] for c in f["contacts"]] == ["+842613544000", "0902000001", "0902000002"]

    # the other board's site is not mixed in, and the intake holds exactly one incident
    assert len(stack.intake.incidents()) == 1 and incident["client"] == stack.intake.client

    # the bridge is the intake's client by a token of its own, in two 0600 files; no token, no answer
    intake = stack.intake
    assert intake.tokens_path.parent == stack.dir and intake.tokens_path.stat().st_mode & 0o777 == 0o600
    assert intake.tokens_path.read_text().split() == [intake.client, intake.token]
    sink = yaml.safe_load(stack.bridge.cfg_path.read_text())["sinks"][0]
    assert (sink["token"], sink["client"]) == (intake.token, intake.client)
    assert stack.bridge.cfg_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(f"{stack.intake_url}/v1/incidents")
    assert refused.value.code == 401


def test_a_reflashed_board_counts_from_one_again_and_its_alarm_reaches_114(stack):
    """Re-flashing writes a fresh filesystem: the counter starts again at 1, under a new install
    epoch, and the alarm is accepted as new, never refused as a replay."""
    from firmware import protocol

    vb = stack.boards[0]
    dev = stack.sites[0]["cfg"]["dev"]
    mark = vb.console.mark()
    vb.request("press", ms=100)
    first = vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 30, since=mark)
    old_ep = first["id"].rsplit("-", 2)[1]

    vb.stop()
    shutil.rmtree(vb.flash)  # what `flash` does to the filesystem: only the device's config remains
    vb.start()
    boot = vb.console.wait_for("boot", 20)
    assert boot["boot"] == 1 and protocol.valid_epoch(boot["ep"]) and boot["ep"] != old_ep
    vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 20)
    mark = vb.console.mark()
    vb.request("press", ms=100)
    ev = vb.console.wait_for(lambda m: m.get("ev") == "event", 10, since=mark)
    assert ev["id"] == protocol.event_id(dev, 1, boot["ep"])
    again = vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 30, since=mark)
    assert again["id"] == ev["id"] and again["incident"] and again["incident"] != first["incident"]
    out = stack.bridge.cli("status").stdout
    assert f"{boot['ep']} NEW" in out and f"(was {old_ep})" in out


def test_make_press_presses_holds_and_knows_when_nothing_runs(tmp_path, capsys):
    """`make press DEVICE=...` (and HOLD=3.5) against a running system, then after it stopped."""
    from firmware.protocol_host import every
    from stack.run import STATE, press

    s = Stack(tmp_path / "stack", 1)  # consoles closed, as `make run` leaves them for `make press`
    try:
        s.up()
        dev = s.sites[0]["cfg"]["dev"]
        assert press(s.dir, "1", 100) == 0
        out = capsys.readouterr().out
        assert f"pressed {dev} for 0.1 s: alarm {dev}-" in out and s.intake_url in out
        assert s.intake.token not in out  # what `make run` printed, too
        assert press(s.dir, dev, 3500) == 0  # a long hold within the cancel window cancels it
        assert f"pressed {dev} for 3.5 s: cancel {dev}-" in capsys.readouterr().out
        assert press(s.dir, "nobody", 100) == 2 and "unknown device 'nobody'" in capsys.readouterr().out
        # the watcher's login for mosquitto_sub is a 0600 file, never a password on its command line
        folder = s.watcher_options()
        assert (folder / "mosquitto_sub").stat().st_mode & 0o077 == 0
        got = subprocess.run(["mosquitto_sub", "-t", every("status"), "-C", "1", "-W", "10"],
                             env=dict(os.environ, XDG_CONFIG_HOME=str(folder)), capture_output=True, text=True,
                             timeout=20)
        assert got.returncode == 0 and '"state":"online"' in got.stdout, got.stderr  # a retained birth
        state = json.loads((s.dir / STATE).read_text())
    finally:
        s.down()
    assert press(s.dir, "1", 100) == 2
    assert "no running system" in capsys.readouterr().out
    # a run killed before it could tidy up leaves its state behind: its process is gone, so is the system
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (s.dir / STATE).write_text(json.dumps(dict(state, pid=gone.pid)))
    assert press(s.dir, "1", 100) == 2 and "no running system" in capsys.readouterr().out


def test_make_panel_drives_the_transmitter_to_114_and_its_contacts(tmp_path, capsys):
    """`make panel DEVICE=... STATE=...` against the demo's transmitter: the building's panel in alarm
    reaches 114 with the facility record, its contacts get the SMS in order (the next when nobody
    answers, until one does), a cut line is a fault until the mended line's restore."""
    from stack.procs import wait_until
    from stack.run import demo_site, panel

    site = next(s for s in SITES if s.get("board") == "virtual-transmitter")
    dev = site["dev"]
    s = Stack(tmp_path / "stack", 1, bridge_extra={"notify": {"ack_s": 3}})
    try:
        s.up(sites=[demo_site(site)], watch=False)
        assert panel(s.dir, dev, "fire", "active") == 0
        out = capsys.readouterr().out
        assert f"{dev}: input fire active: alarm (panel) {dev}-" in out
        wait_until(lambda: len(s.intake.incidents()) == 1, 30, what="the panel's alarm at the intake")
        incident = s.intake.incident(s.intake.incidents()[0]["incident_id"])
        assert incident["cause"] == "panel" and incident["facility"]["type"] == "hotel"
        assert incident["province_code"] == "48"  # Đà Nẵng
        # the facility's first contact is told by SMS, in Vietnamese, naming the building
        sms = wait_until(lambda: s.smsc.messages(), 30, what="an SMS to the first contact")
        assert sms[0]["to"] == "842363940000" and site["site"]["building"] in sms[0]["text"], sms
        assert "Tủ báo cháy" in sms[0]["text"]
        wait_until(lambda: s.smsc.messages()[0]["status"] == "DELIVRD", 15, what="the network's receipt")
        # nobody answers within ack_s: the second contact is told; its answer ends the calling
        second = wait_until(lambda: [m for m in s.smsc.messages() if m["to"].endswith("905000001")], 30,
                            what="the SMS to the second contact")
        assert "liên hệ số 2" in second[0]["text"]
        assert s.smsc.reply(second[0]["to"], "Đã nhận") == 1
        wait_until(lambda: "acked" in s.bridge.cli("status").stdout, 15, what="the callout acknowledged")
        assert panel(s.dir, dev, "fault", "open") == 0
        assert f"{dev}: input fault open: fault (line-open)" in capsys.readouterr().out

        def line_faults():
            return [f for f in s.bridge.status()["faults"] if f["device"] == dev and "line-open" in f["kind"]]

        wait_until(line_faults, 30, what="the line-open fault at the bridge")
        assert panel(s.dir, dev, "fault", "open") == 0
        assert "already open; nothing to send" in capsys.readouterr().out
        assert panel(s.dir, dev, "fault", "normal") == 0  # the line mended: its restore clears the fault
        wait_until(lambda: not line_faults(), 30, what="the line-open fault cleared by its restore")
        assert panel(s.dir, dev, "smoke", "open") == 2
        assert "no input 'smoke'" in capsys.readouterr().out
    finally:
        s.down()
    assert panel(s.dir, dev, "fire", "normal") == 2
    assert "no running system" in capsys.readouterr().out


def test_a_transmitter_that_stops_sending_its_periodic_test_is_a_fault(tmp_path):
    """The whole chain of the periodic test signal: the transmitter sends it every test_s, 114 records
    it as a test (no incident), and once the device falls silent the bridge raises test-missed."""
    from stack.procs import wait_until
    from stack.run import demo_site

    site = next(s for s in SITES if s.get("board") == "virtual-transmitter")
    entry = demo_site(site)
    entry["cfg"]["test_s"] = 3
    s = Stack(tmp_path / "stack", 1, bridge_extra={"supervision": {"test_s": 3, "test_grace_s": 2}})
    try:
        s.up(sites=[entry], watch=False, smsc=False)
        tests = wait_until(lambda: s.intake.tests(), 30, what="a periodic test at the intake")
        assert tests[0]["cause"] == "periodic" and s.intake.incidents() == []

        def missed():
            return [f for f in s.bridge.status()["faults"] if f["kind"] == "test-missed"]

        assert not missed()  # it is testing
        s.boards[0].stop()  # the transmitter loses its power, and with it the tests
        fault = wait_until(missed, 30, what="the test-missed fault")
        assert fault[0]["device"] == site["dev"]
    finally:
        s.down()

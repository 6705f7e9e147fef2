"""Firmware updates end to end (docs/ota.md): bundles built by `baochay-provision release`, uploaded to a
real bridge, rolled out over a real broker to virtual boards (the firmware on MicroPython), which
download, verify, install, reboot into the new slot and are confirmed, or roll back by themselves."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from provisioning.release import build_release, keygen
from stack.procs import wait_until
from stack.run import Stack

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
CHUNK = 512  # small chunks: a download takes long enough to cut the power in the middle of it


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The release key and the bundles the tests roll out (compiled once for the module)."""
    d = tmp_path_factory.mktemp("release")
    keys = keygen(d / "keys")
    broken = d / "broken-firmware"  # a release whose application cannot even be imported
    shutil.copytree(FIRMWARE, broken, ignore=shutil.ignore_patterns("__pycache__"))
    app = broken / "app.py"
    app.write_text(app.read_text().replace("import commands\n", "import commands\nimport no_such_module  # noqa\n", 1))
    moody = d / "moody-firmware"  # starts, unless the flash holds a `refuse-to-start` file
    shutil.copytree(FIRMWARE, moody, ignore=shutil.ignore_patterns("__pycache__"))
    app = moody / "app.py"
    app.write_text(app.read_text().replace("    async def main(self):\n        b = self.board\n", (
        "    async def main(self):\n        b = self.board\n        import os\n\n"
        "        if 'refuse-to-start' in os.listdir(self.dir):\n            raise RuntimeError('refusing')\n"), 1))
    out = d / "bundles"
    bundles = {
        "good": build_release(keys.key, "0.2.0", 2, ["virtual"], out_dir=out / "good"),
        "broken": build_release(keys.key, "0.3.0", 2, ["virtual"], out_dir=out / "broken", firmware_dir=broken),
        "older-sv": build_release(keys.key, "0.2.1", 1, ["virtual"], out_dir=out / "older"),
        "panic-only": build_release(keys.key, "0.4.0", 2, ["virtual-panic"], out_dir=out / "panic"),
        "moody": build_release(keys.key, "0.5.0", 2, ["virtual"], out_dir=out / "moody", firmware_dir=moody),
    }
    return keys, {k: v.path for k, v in bundles.items()}


@pytest.fixture
def stack(tmp_path, release):
    keys, _ = release
    s = Stack(tmp_path / "stack", 2, keep_consoles=True, bridge_extra={
        "ota": {"release_key": str(keys.pub), "chunk": CHUNK, "confirm_s": 60, "stall_s": 5, "tick_s": 0.5}})
    try:
        s.up(smsc=False, watch=False)
        for vb in s.boards:
            vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 30)
        yield s
    finally:
        s.down()


def cli(stack, *args, ok=True):
    r = stack.bridge.cli("ota", *args)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def status(stack) -> dict:
    """The latest rollout, as `ota status --json` shows it: {dev: device row}, and the rollout."""
    rows = json.loads(cli(stack, "status", "--json").stdout)["rollouts"]
    return rows[0] if rows else {}


def device_state(stack, dev):
    for d in status(stack).get("devices", []):
        if d["dev"] == dev:
            return d
    return None


def wait_device(stack, dev, states, timeout=120):
    return wait_until(lambda: (d := device_state(stack, dev)) and d["state"] in states and d, timeout, 0.5,
                      what=f"{dev} in {states} (ota status)")


def downloading(stack, bundle, i, pct):
    """The good bundle rolled out to board i, until its download passes pct: (board, device id, mark)."""
    cli(stack, "upload", str(bundle))
    vb, dev = stack.boards[i], stack.sites[i]["cfg"]["dev"]
    mark = vb.console.mark()
    cli(stack, "rollout", "0.2.0", "--to", f"devices={dev}")
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "downloading" and m["pct"] >= pct,
                        120, since=mark)
    return vb, dev, mark


def test_a_good_bundle_ends_confirmed_on_the_new_version(stack, release):
    _, bundles = release
    up = cli(stack, "upload", str(bundles["good"]))
    assert "bundle 0.2.0 uploaded" in up.stdout
    vb = stack.boards[0]
    dev = stack.sites[0]["cfg"]["dev"]
    mark = vb.console.mark()
    cli(stack, "rollout", "0.2.0", "--to", f"devices={dev}")
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "installed", 120, since=mark)
    boot = vb.console.wait_for(lambda m: m.get("ev") == "boot" and m.get("fw") == "0.2.0", 60, since=mark)
    assert boot["reset_cause"] == "soft"
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "confirmed", 120, since=mark)
    d = wait_device(stack, dev, ("confirmed",))
    assert d["reason"] is None
    assert status(stack)["state"] == "done"
    assert vb.request("status")["fw"] == "0.2.0"
    # confirmed: it stays on the new version across a power cut
    vb.power_cut()
    assert vb.request("status")["fw"] == "0.2.0"
    # the button still works on it, end to end
    mark = vb.console.mark()
    vb.request("press", ms=80)
    vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 40, since=mark)


def test_a_bundle_that_crashes_on_import_rolls_back_and_halts_the_rollout(stack, release):
    _, bundles = release
    cli(stack, "upload", str(bundles["broken"]))
    devs = [s["cfg"]["dev"] for s in stack.sites]
    vb = stack.boards[0]  # the first in id order is the canary (50% of two)
    mark = vb.console.mark()
    cli(stack, "rollout", "0.3.0", "--to", f"devices={','.join(devs)}", "--canary", "50")
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "installed", 120, since=mark)
    back = vb.console.wait_for(lambda m: m.get("ev") == "boot" and m.get("fw") == "0.1.0", 90, since=mark)
    assert back["fw"] == "0.1.0"  # the previous application, by itself
    d = wait_device(stack, devs[0], ("rolled-back",))
    assert "0.3.0 rolled back" in d["reason"] and "no_such_module" in d["reason"]
    wait_until(lambda: status(stack)["state"] == "halted", 30, 0.5, what="rollout halted")
    st = status(stack)
    assert "1 of 1 canary devices failed" in st["reason"]
    assert device_state(stack, devs[1])["state"] == "skipped"  # never offered
    assert stack.boards[1].request("status")["fw"] == "0.1.0"
    text = cli(stack, "status").stdout
    assert "HALTED" in text and "rolled-back" in text
    # the operator hears of it as a fault of the device too
    faults = stack.bridge.status()
    assert "update-failed" in json.dumps(faults)


def test_refused_bundles_and_offers_say_why(stack, release, tmp_path):
    keys, bundles = release
    # at the bridge: a bundle whose bytes were changed, and one signed with another key
    tampered = tmp_path / "tampered.bcb"
    raw = bytearray(bundles["good"].read_bytes())
    with tarfile.open(bundles["good"]) as tar:
        member = tar.getmember("payload.bin")
    raw[member.offset_data + member.size // 2] ^= 0xFF  # a byte in the middle of the payload
    tampered.write_bytes(raw)
    r = cli(stack, "upload", str(tampered), ok=False)
    assert r.returncode == 1 and "bad-hash" in r.stderr
    other = keygen(tmp_path / "other-keys")
    forged = build_release(other.key, "0.9.0", 9, ["virtual"], out_dir=tmp_path / "forged")
    r = cli(stack, "upload", str(forged.path), ok=False)
    assert r.returncode == 1 and "bad-signature" in r.stderr
    refused = json.loads(cli(stack, "status", "--json").stdout)["refused_uploads"]
    assert [(Path(u["file"]).name, u["reason"]) for u in refused] == [
        (forged.path.name, "bad-signature"), ("tampered.bcb", "bad-hash")], refused
    shown = cli(stack, "status").stdout
    assert "bundles refused at upload" in shown, shown
    assert any("tampered.bcb" in line and "bad-hash" in line for line in shown.splitlines()), shown
    # at the devices: a bundle for another board, then a lower security version after 0.2.0
    dev0, dev1 = (s["cfg"]["dev"] for s in stack.sites)
    cli(stack, "upload", str(bundles["panic-only"]))
    cli(stack, "rollout", "0.4.0", "--to", f"devices={dev1}")
    d = wait_device(stack, dev1, ("refused",), 30)
    assert d["reason"].startswith("wrong-board")
    cli(stack, "upload", str(bundles["good"]))
    cli(stack, "rollout", "0.2.0", "--to", f"devices={dev0}")
    wait_device(stack, dev0, ("confirmed",), 180)
    cli(stack, "upload", str(bundles["older-sv"]))
    cli(stack, "rollout", "0.2.1", "--to", f"devices={dev0}")
    d = wait_device(stack, dev0, ("refused",), 60)
    assert d["reason"].startswith("downgrade") and "below this device's 2" in d["reason"]
    assert stack.boards[0].request("status")["fw"] == "0.2.0"


def test_a_power_cut_mid_download_resumes_from_the_offset(stack, release):
    vb, dev, _ = downloading(stack, release[1]["good"], 1, 20)
    mark = vb.console.mark()
    vb.power_cut()
    resumed = vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "resumed", 30, since=mark)
    assert resumed["off"] > 0
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "confirmed", 180, since=mark)
    assert vb.request("status")["fw"] == "0.2.0"
    wait_device(stack, dev, ("confirmed",))


def test_a_download_that_keeps_rebooting_the_device_is_failed_not_offered_again(stack, release):
    # On a stock ESP32 a download can run the chip out of memory, and each try takes it offline
    # until its link watch reboots it (docs/ota.md): three reboots during one download end it.
    vb, dev, _ = downloading(stack, release[1]["good"], 1, 0)
    for _ in range(3):
        mark = vb.console.mark()
        vb.power_cut()
        vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 30, since=mark)
    d = wait_device(stack, dev, ("failed",), 60)
    assert d["reason"] == "rebooted 3 times during the download", d
    wait_until(lambda: status(stack)["state"] == "halted", 10, 0.5, what="the rollout halted")  # next tick
    assert vb.request("status")["fw"] == "0.1.0"  # still the version it ran, and protecting
    mark = vb.console.mark()
    vb.request("press", ms=80)
    vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 40, since=mark)


def test_a_panic_button_without_room_for_the_update_refuses_it_and_keeps_protecting(tmp_path, release):
    # The panic button at the heap cap its tests run at (docs/performance.md) cannot even load the
    # update's code: it says so once, the rollout ends there, and its button still reaches 114.
    keys, bundles = release
    s = Stack(tmp_path / "panic", 1, keep_consoles=True, heap="72K", board="virtual-panic", bridge_extra={
        "ota": {"release_key": str(keys.pub), "chunk": CHUNK, "confirm_s": 60, "stall_s": 5, "tick_s": 0.5}})
    try:
        s.up(smsc=False, watch=False)
        vb, dev = s.boards[0], s.sites[0]["cfg"]["dev"]
        vb.console.wait_for(lambda m: m.get("ev") == "mqtt" and m.get("state") == "connected", 30)
        cli(s, "upload", str(bundles["panic-only"]))
        cli(s, "rollout", "0.4.0", "--to", f"devices={dev}")
        d = wait_device(s, dev, ("refused",), 60)
        assert d["reason"] == "low-memory no room to load the update code", d
        st = vb.request("status")
        assert st["fw"] == "0.1.0" and st["lowmem"] >= 1
        mark = vb.console.mark()
        vb.request("press", ms=80)
        vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("stage") == "accepted", 40, since=mark)
    finally:
        s.down()


def test_an_alarm_during_a_download_goes_first_and_the_update_waits(stack, release):
    vb, dev, _ = downloading(stack, release[1]["good"], 0, 0)
    mark = vb.console.mark()
    vb.request("press", ms=80)
    ev = vb.console.wait_for(lambda m: m.get("ev") == "event" and m.get("type") == "alarm", 5, since=mark)
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "waiting", 10, since=mark)
    vb.console.wait_for(lambda m: m.get("ev") == "ack" and m.get("id") == ev["id"] and m.get("stage") == "accepted",
                        40, since=mark)
    wait_device(stack, dev, ("waiting",), 30)
    assert vb.request("status")["fw"] == "0.1.0"  # nothing installed while the alarm stands
    vb.request("press", ms=3500)  # a long hold cancels: the incident is over, the update goes on
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "confirmed", 180, since=mark)
    wait_device(stack, dev, ("confirmed",))


def test_ten_failed_boots_reach_safe_mode_and_the_bridge_hears_of_it(stack, release):
    _, bundles = release
    cli(stack, "upload", str(bundles["moody"]))
    vb = stack.boards[0]
    dev = stack.sites[0]["cfg"]["dev"]
    cli(stack, "rollout", "0.5.0", "--to", f"devices={dev}")
    wait_device(stack, dev, ("confirmed",), 180)
    assert vb.request("status")["fw"] == "0.5.0"
    mark = vb.console.mark()
    (vb.flash / "refuse-to-start").write_text("")  # from now on the confirmed application cannot start
    vb.power_cut(wait_boot=False)
    # ten boots that never come online, then the base firmware, which does, and says why
    boot = vb.console.wait_for(lambda m: m.get("ev") == "boot", 120, since=mark)
    assert boot["fw"] == "0.1.0"
    faults = wait_until(lambda: "safe mode" in json.dumps(stack.bridge.status(), ensure_ascii=False)
                        and stack.bridge.status(), 60, 1.0, what="the safe-mode fault at the bridge")
    text = json.dumps(faults, ensure_ascii=False)
    assert "update-failed" in text and "failed 10 boots" in text


def test_a_bridge_restarted_mid_rollout_goes_on_with_it(stack, release):
    vb, dev, mark = downloading(stack, release[1]["good"], 1, 10)
    stack.bridge.kill()  # no clean shutdown: the rollout is only in the database
    stack.bridge.start()
    vb.console.wait_for(lambda m: m.get("ev") == "ota" and m.get("state") == "confirmed", 180, since=mark)
    wait_device(stack, dev, ("confirmed",))
    assert status(stack)["state"] == "done"

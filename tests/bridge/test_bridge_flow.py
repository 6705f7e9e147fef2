"""End to end through a real Mosquitto and the bridge process: what a device and the 114 side see."""

from __future__ import annotations

from bridge_harness import wait_for

from firmware import protocol


def test_alarm_is_stored_then_accepted(fleet, broker, make_bridge, intake):
    bridge = make_bridge().start()
    dev_id = next(iter(fleet.devices))
    dev = fleet.sim(dev_id, broker).connect()
    eid = dev.alarm()
    stored = dev.wait_stage(eid, "stored")
    accepted = dev.wait_stage(eid, "accepted")  # `forwarded` only comes when the first attempt is not accepted
    assert stored["id"] == eid
    assert accepted["incident"] == intake.incidents[eid]
    post = intake.posts_for(eid)[0]
    assert post["building"] == "Toa nha A" and 0 < post["confidence"] <= 1 and post["reasons"]
    order = [a["stage"] for a in dev.acks(eid)]
    assert order.index("stored") < order.index("accepted")
    dev.close()
    assert bridge.stop() == 0


def test_duplicate_is_acked_again_and_not_forwarded_again(fleet, broker, make_bridge, intake):
    make_bridge().start()
    dev = fleet.sim("hn-t-0001", broker).connect()
    eid, frame = dev.make_event("alarm", "button")
    dev.send_frame(eid, frame)
    first = dev.wait_stage(eid, "accepted")
    n_acks = len(dev.acks(eid))
    dev.send_frame(eid, frame)  # the device did not see the ack and sends it again
    wait_for(lambda: len(dev.acks(eid)) > n_acks)
    again = dev.acks(eid)[-1]
    assert again["stage"] == "accepted" and again["incident"] == first["incident"]
    assert len(intake.posts_for(eid)) == 1


def test_an_authentic_event_behind_the_counter_is_forwarded_late_never_dropped(fleet, broker, make_bridge,
                                                                              intake):
    make_bridge().start()
    dev = fleet.sim("hn-t-0001", broker, ctr=10).connect()
    newer = dev.alarm()
    dev.wait_stage(newer, "stored")
    old_id, old_frame = dev.make_event("alarm", "button", ctr=4)  # validly signed, never stored, behind
    dev.send_frame(old_id, old_frame)
    assert dev.wait_stage(old_id, "accepted")["incident"]
    post = intake.posts_for(old_id)
    assert len(post) == 1 and "counter 4 arrived after 11" in post[0]["late"]
    assert intake.posts_for(newer)[0]["late"] is None


def test_the_same_event_id_with_other_bytes_is_refused_counted_and_shown(fleet, broker, make_bridge, intake):
    bridge = make_bridge().start()
    dev = fleet.sim("hn-t-0001", broker, ctr=10).connect()
    first = dev.alarm()
    dev.wait_stage(first, "accepted")
    ctr = int(first.rsplit("-", 1)[1])
    forged_id, other = dev.make_event("alarm", "heat", ctr=ctr)  # same id, other body: not that frame
    n_acks = len(dev.acks(first))
    dev.send_frame(forged_id, other, keep=False)
    later = dev.alarm()
    dev.wait_stage(later, "accepted")  # the store handles events in order: the conflict was judged before
    assert len(dev.acks(first)) == n_acks and len(intake.posts_for(first)) == 1
    out = bridge.cli("status").stdout
    assert "conflict" in out and "hn-t-0001" in out


def test_cancel_goes_out_as_an_update_of_the_same_incident(fleet, broker, make_bridge, intake):
    make_bridge().start()
    dev = fleet.sim("hn-t-0002", broker).connect()
    alarm = dev.alarm()
    incident = dev.wait_stage(alarm, "accepted")["incident"]
    cancel = dev.send("cancel", "button", ref=alarm)
    dev.wait_stage(cancel, "accepted")
    post = intake.posts_for(cancel)[0]
    assert post["references"] == alarm and post["incident_key"] == alarm
    assert post["incident_id"] == incident
    assert post["confidence"] < intake.posts_for(alarm)[0]["confidence"]


def test_intake_outage_is_retried_until_it_is_back(fleet, broker, make_bridge, intake):
    bridge = make_bridge().start()
    intake.mode = "down"
    dev = fleet.sim("hn-t-0001", broker).connect()
    eid = dev.alarm()
    dev.wait_stage(eid, "forwarded")
    wait_for(lambda: len(intake.posts_for(eid)) >= 2)  # retried
    status = bridge.cli("status").stdout
    assert "HTTP 503" in status
    assert dev.stage(eid) == "forwarded"
    intake.mode = "up"
    assert dev.wait_stage(eid, "accepted")["incident"] == intake.incidents[eid]


def test_refused_report_fails_at_once_is_an_operator_fault_and_a_late_acceptance_clears_it(
        fleet, broker, make_bridge, intake):
    bridge = make_bridge().start()
    intake.mode = "refuse"
    dev = fleet.sim("hn-t-0003", broker).connect()
    eid = dev.alarm()
    failed = dev.wait_stage(eid, "failed")
    assert "refused" in failed["reason"]
    status = bridge.cli("status").stdout
    assert "delivery" in status and eid in status and "still trying" in status
    assert "failed, still trying" in bridge.cli("alarms", "list").stdout
    wait_for(lambda: len(intake.posts_for(eid)) >= 2)  # not given up: sent again
    intake.mode = "up"  # the intake is mended
    assert dev.wait_stage(eid, "accepted")["incident"] == intake.incidents[eid]
    wait_for(lambda: eid not in bridge.cli("faults").stdout)  # the fault closed by itself


def test_an_operator_closes_an_alarm_that_114_keeps_refusing(fleet, broker, make_bridge, intake):
    bridge = make_bridge().start()
    intake.mode = "refuse"
    dev = fleet.sim("hn-t-0003", broker).connect()
    eid = dev.alarm()
    dev.wait_stage(eid, "failed")
    no_why = bridge.cli("alarms", "close", eid, "--why", " ")
    assert no_why.returncode == 1 and "say why" in no_why.stderr
    done = bridge.cli("alarms", "close", eid, "--why", "called 114 by phone")
    assert done.returncode == 0 and f"closed {eid}" in done.stdout
    assert eid not in bridge.cli("faults").stdout
    n = len(intake.posts_for(eid))
    intake.mode = "up"
    later = dev.alarm()
    dev.wait_stage(later, "accepted")  # the bridge is sending, but not the closed one
    assert len(intake.posts_for(eid)) == n
    listed = bridge.cli("alarms", "list").stdout
    assert eid in listed and "closed" in listed and "called 114 by phone" in listed
    again = bridge.cli("alarms", "close", eid, "--why", "twice")
    assert again.returncode == 1 and "nothing to close" in again.stderr


def test_a_device_cannot_publish_on_another_devices_topic(fleet, broker, make_bridge, intake):
    bridge = make_bridge().start()
    a = fleet.sim("hn-t-0001", broker).connect()
    victim = "hn-t-0002"
    _pw, victim_key = fleet.devices[victim]
    from support.simdevice import AsyncDevice

    forged = AsyncDevice(victim, bytes.fromhex(victim_key), broker.host, broker.port, "x")
    eid, frame = forged.make_event("alarm", "button")  # even with the right key, the topic is not a's
    a.publish_raw(protocol.topic(victim, "event"), frame)
    own = a.alarm()
    a.wait_stage(own, "accepted")
    out = bridge.cli("events", "--last", "50").stdout
    assert own in out and eid not in out
    assert intake.posts_for(eid) == []

"""One device cannot push another aside: per-device limits on a real bridge and broker, the `flood`
fault naming the device, counters written once a tick, a bounded log. The figure under a full-rate
flood is bench/flood.py's."""

from __future__ import annotations

import json

from bridge_harness import metric, wait_for

from bridge import db
from bridge.limits import Drops, Limits
from firmware import protocol
from stack.ports import free_port


def test_a_token_bucket_allows_its_burst_then_its_rate():
    t = [0.0]
    lim = Limits({"mains": {"telemetry": (2, 5), "status": (1, 1), "rejected": (1, 1)}}, clock=lambda: t[0])
    assert [lim.take("d", "telemetry") for _ in range(6)] == [True] * 5 + [False]
    t[0] += 1.0  # two more tokens a second
    assert [lim.take("d", "telemetry") for _ in range(3)] == [True, True, False]
    assert lim.take("other", "telemetry")  # a device's bucket is its own
    t[0] += 100.0
    assert sum(lim.take("d", "telemetry") for _ in range(10)) == 5  # never more than the burst


def test_reject_counters_fold_unknown_ids_beyond_a_bound():
    d = Drops()
    for i in range(5000):
        d.rejected("unknown-device", f"random-{i}")
    _dropped, rejected = d.take()
    assert len(rejected) <= 1001 and sum(rejected.values()) == 5000
    assert d.take() == ({}, {})


def test_a_flooding_device_is_dropped_named_and_its_neighbour_is_not_delayed(fleet, broker, make_bridge):
    port = free_port()
    bridge = make_bridge(metrics={"host": "127.0.0.1", "port": port},
                         limits={"rates": {"mains": {"telemetry": [1, 5], "status": [1, 5], "rejected": [1, 5]},
                                           "battery": {"telemetry": [1, 5], "status": [1, 5],
                                                       "rejected": [1, 5]}},
                                 "flood_clear_s": 2}).start()
    noisy = fleet.sim("hn-t-0001", broker).connect()
    quiet = fleet.sim("hn-t-0002", broker).connect()
    ev, tel = protocol.topic("hn-t-0001", "event"), protocol.topic("hn-t-0001", "telemetry")
    telemetry = json.dumps({"v": 1, "dev": "hn-t-0001", "up": 1, "ts": 0, "boot": 1, "rssi": -60}).encode()
    for i in range(400):
        noisy.publish_raw(ev, b"junk %d" % i, qos=0)
        noisy.publish_raw(tel, telemetry, qos=0)
    alarm = quiet.alarm()
    quiet.wait_stage(alarm, "accepted")
    own = noisy.alarm()  # the flooding device's own signed alarm is never limited
    noisy.wait_stage(own, "accepted")
    wait_for(lambda: metric(port, "baochay_dropped_total") >= 700, timeout=20)
    assert metric(port, "baochay_received_total") >= 800

    def flood_fault():
        data = json.loads(bridge.cli("status", "--json").stdout)
        return [f for f in data["faults"] if f["kind"] == "flood"] or None
    faults = wait_for(flood_fault, timeout=10, step=0.2)
    assert [f["device"] for f in faults] == ["hn-t-0001"], faults
    assert "dropped" in faults[0]["reason"] and "telemetry" in faults[0]["reason"]
    # within its limits for flood_clear_s: the fault closes by itself
    wait_for(lambda: not flood_fault(), timeout=15, step=0.3)
    conn = db.connect(bridge.db, readonly=True)
    try:
        unsigned = conn.execute("SELECT n FROM rejects WHERE device='hn-t-0001' AND reason='unsigned'").fetchone()
    finally:
        conn.close()
    assert unsigned is not None and 1 <= unsigned["n"] <= 10  # the rest were over its `rejected` limit
    log = bridge.log_path.read_text().splitlines()
    assert len([ln for ln in log if "message rejected" in ln]) <= 3, "one line per reason per 10 s at most"
    assert len([ln for ln in log if "over its limits" in ln]) == 1
    assert any("within its limits again" in ln for ln in log)

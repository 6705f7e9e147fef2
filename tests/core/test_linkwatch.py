# The broker out of reach: restart the interface every restart_s, reboot after reboot_s.
from linkwatch import LinkWatch
from util import device_config

RESTART, REBOOT = "restart", "reboot"


def _run(w, until_ms, step_ms=500, up=lambda t: False, held=lambda t: False):
    return [(t, a) for t in range(0, until_ms + 1, step_ms)
            for a in [w.step(t, up(t), held(t))] if a]


def test_restarts_every_period_then_reboots():
    w = LinkWatch(restart_s=60, reboot_s=200)
    acts = _run(w, 210000)
    assert acts[:3] == [(60000, RESTART), (120000, RESTART), (180000, RESTART)]
    assert acts[3] == (200000, REBOOT) and all(a == REBOOT for _, a in acts[3:])
    assert w.restarts == 3 and w.outage_s(200000) == 200


def test_a_connection_starts_the_count_again():
    w = LinkWatch(restart_s=60, reboot_s=200)
    acts = _run(w, 400000, up=lambda t: 150000 <= t < 160000)
    # connected from 150 s to 160 s: the outage that follows counts from 160 s
    assert [t for t, a in acts if a == RESTART] == [60000, 120000, 220000, 280000, 340000]
    assert min(t for t, a in acts if a == REBOOT) == 360000


def test_the_rig_holding_the_network_down_is_not_an_outage():
    w = LinkWatch(restart_s=60, reboot_s=200)
    assert _run(w, 500000, held=lambda t: True) == []
    assert w.outage_s(500000) == 0


def test_zero_turns_a_step_off():
    assert _run(LinkWatch(restart_s=0, reboot_s=0), 10 ** 6) == []
    acts = _run(LinkWatch(restart_s=0, reboot_s=100), 100000)
    assert acts == [(100000, REBOOT)]
    acts = _run(LinkWatch(restart_s=30, reboot_s=0), 100000)
    assert acts == [(30000, RESTART), (60000, RESTART), (90000, RESTART)]


def test_counts_survive_the_tick_counter_wrapping():
    w = LinkWatch(restart_s=1, reboot_s=0)
    from compat import ticks_add

    start = ticks_add(0, -600)  # 600 ms before the counter wraps
    assert w.step(start, False) is None
    assert w.step(ticks_add(start, 999), False) is None
    assert w.step(ticks_add(start, 1000), False) == RESTART


def test_device_config_keys_default_and_are_checked():
    import config

    c = config.validate(device_config())
    assert c["net_restart_s"] == 120 and c["net_reboot_s"] == 900
    c = config.validate(device_config(net_restart_s=0, net_reboot_s=30))
    assert c["net_restart_s"] == 0 and c["net_reboot_s"] == 30
    for keys, words in (({"net_reboot_s": 20}, "'net_reboot_s' must be 0 (off) or at least 30"),
                        ({"net_restart_s": 5}, "'net_restart_s' must be 0 (off) or at least 10"),
                        ({"net_restart_s": -1}, "'net_restart_s' must not be negative"),
                        ({"net_reboot_s": "soon"}, "'net_reboot_s' must be int")):
        try:
            config.validate(device_config(**keys))
        except config.ConfigError as e:
            assert words in str(e), str(e)
        else:
            raise AssertionError("accepted %r" % keys)

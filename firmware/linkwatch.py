# When the broker stays out of reach: first restart the network interface, then the whole device.
# A radio or IP stack can wedge with the link still reported up (seen on the emulated ESP32: frames
# stop arriving after a write times out, and nothing short of a reset brings them back); the device
# must recover by itself, as ESPHome's reboot_timeout does. Pure policy, on both interpreters: the
# app feeds it the time and the client's state and carries out what it answers.
from compat import ticks_diff


class LinkWatch:
    def __init__(self, restart_s, reboot_s):
        # 0 turns a step off. Restarts repeat every restart_s until the broker answers or reboot_s.
        self.restart_ms = restart_s * 1000
        self.reboot_ms = reboot_s * 1000
        self.since = None  # when the broker was last seen connected, or first missed
        self.restarts = 0  # restarts in this outage

    def step(self, now, broker_up, held=False):
        """Returns 'restart', 'reboot' or None. `held`: the test rig holds the network down on purpose."""
        if broker_up or held:
            self.since = None
            self.restarts = 0
            return None
        if self.since is None:
            self.since = now
            return None
        out = ticks_diff(now, self.since)
        if self.reboot_ms and out >= self.reboot_ms:
            return "reboot"
        if self.restart_ms and out >= self.restart_ms * (self.restarts + 1):
            self.restarts += 1
            return "restart"
        return None

    def outage_s(self, now):
        return 0 if self.since is None else ticks_diff(now, self.since) // 1000

# Manual call point (EN 54-11 Type A: one action raises the alarm), as a pure state machine, and the
# debounce of its button. Inputs are debounced button edges, acks and time; outputs are what the app
# must do.
# It owns the indicator state the occupant sees (docs/protocol.md section 10).
from compat import const, ticks_diff
from protocol import advances

_SHOWN = const(("sent", "stored", "failed", "accepted"))  # the stages the occupant sees


class CallPoint:
    def __init__(self, hold_cancel_ms=3000, cancel_window_s=30):
        self.hold_cancel_ms = hold_cancel_ms
        self.cancel_window_ms = cancel_window_s * 1000
        self.alarm_id = None  # the active alarm's event id
        self.alarm_at = None
        self.cancel_id = None
        self.indicator = "idle"
        self.incident = None
        self._down_at = None
        self._armed_for_cancel = False  # the press that raised the alarm must be released first
        self._cancel_sent = False

    # -- button ---------------------------------------------------------------------------
    def press(self, now):
        """Debounced press. Returns "alarm" when an alarm must be raised now: no alarm is active
        (none yet, cancelled, or older than the cancel window). A press during an active alarm
        may be the start of a cancelling hold."""
        self._down_at = now
        if self.alarm_id is not None and self.indicator != "cancelled" and self._in_window(now):
            return None
        self._armed_for_cancel = False
        self._cancel_sent = False
        self.alarm_id = None
        self.indicator = "alarm"
        self.alarm_at = now
        return "alarm"

    def release(self, now):
        self._down_at = None
        if self.alarm_id is not None and not self._cancel_sent:
            self._armed_for_cancel = True

    def tick(self, now):
        """Called often. Returns "cancel" when a long hold inside the window must cancel the alarm."""
        if (
            self._down_at is not None
            and self._armed_for_cancel
            and not self._cancel_sent
            and self.alarm_id is not None
            and self._in_window(now)
            and ticks_diff(now, self._down_at) >= self.hold_cancel_ms
        ):
            self._cancel_sent = True
            self.indicator = "cancelled"
            return "cancel"
        return None

    # -- across a reboot ------------------------------------------------------------------
    def saved(self):
        """What the occupant sees, as one line for flash: '<alarm id> <indicator> [<incident>]'."""
        if self.alarm_id is None:
            return ""
        return " ".join((self.alarm_id, self.indicator) + ((self.incident,) if self.incident else ()))

    def restore(self, line):
        """After a reboot, show what was shown before: the alarm, its last stage, its incident. Its
        cancel window does not survive the reboot (a later ack still moves the stage on)."""
        parts = line.split()
        if len(parts) >= 2 and (parts[1] in _SHOWN or parts[1] in ("alarm", "cancelled")):
            self.alarm_id, self.indicator = parts[0], parts[1]
            self.incident = parts[2] if len(parts) > 2 else None

    def _in_window(self, now):
        return self.alarm_at is not None and ticks_diff(now, self.alarm_at) <= self.cancel_window_ms

    # -- the events the app created for us --------------------------------------------------
    def raised(self, kind, eid):
        if kind == "alarm":
            self.alarm_id = eid
            self.incident = None
        elif kind == "cancel":
            self.cancel_id = eid

    # -- delivery progress ----------------------------------------------------------------
    def progress(self, eid, stage, incident=None):
        """A stage for the event `eid`. Returns True when the indicator changed. Stages move only
        forward, in the protocol's order: `accepted` is final, and a late `accepted` still
        replaces `failed`. "forwarded" shows as "stored" to the occupant."""
        if eid != self.alarm_id or self.indicator == "cancelled":
            return False
        shown = "stored" if stage == "forwarded" else stage
        if shown not in _SHOWN:
            return False
        if not advances(shown, self.indicator if self.indicator in _SHOWN else None):
            return False
        self.indicator = shown
        if incident:
            self.incident = incident
        return True


# Button debounce: a level must hold for `ms` before it counts as an edge.
class Debouncer:
    def __init__(self, ms=30):
        self.ms = ms
        self.state = False
        self._raw = self.state
        self._since = None
        self.changed_at = None

    def sample(self, pressed, now):
        """Feed one raw sample (True = pressed). Returns "down", "up" or None."""
        if pressed != self._raw:
            self._raw = pressed
            self._since = now
            return None
        if pressed != self.state and self._since is not None and ticks_diff(now, self._since) >= self.ms:
            self.state = pressed
            self.changed_at = now
            return "down" if pressed else "up"
        return None

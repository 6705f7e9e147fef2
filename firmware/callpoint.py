# Manual call point (EN 54-11 Type A: one action raises the alarm), as a pure state machine.
# Inputs are debounced button edges, acks and time; outputs are what the app must do.
# It owns the indicator state the occupant sees (docs/protocol.md section 10).
from compat import ticks_diff

STAGES = ("alarm", "sent", "stored", "forwarded", "accepted")


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
        """A stage for an event (sent, stored, forwarded, accepted, failed). Returns True when the
        indicator changed."""
        if eid != self.alarm_id or self.indicator == "cancelled":
            return False
        if stage == "failed":
            if self.indicator != "failed":
                self.indicator = "failed"
                return True
            return False
        if self.indicator == "failed" or stage not in STAGES:
            return False
        # stages only move forward; "forwarded" shows as "stored" to the occupant
        shown = "stored" if stage == "forwarded" else stage
        if STAGES.index(shown) > STAGES.index(self.indicator if self.indicator in STAGES else "alarm"):
            self.indicator = shown
            if incident:
                self.incident = incident
            return True
        return False

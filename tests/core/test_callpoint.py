# The manual call point: press raises at once, long hold cancels, acks move the indicator forward.
from callpoint import CallPoint, Debouncer
from indicator import Indicator


def _alarm(cp, now=0):
    assert cp.press(now) == "alarm"
    cp.raised("alarm", "d-00000001")
    assert cp.indicator == "alarm"
    cp.release(now + 100)


def test_press_raises_alarm_once():
    cp = CallPoint()
    _alarm(cp)
    assert cp.press(1000) is None  # a second press during the alarm raises nothing new
    cp.release(1100)


def test_stages_move_forward_only():
    cp = CallPoint()
    _alarm(cp)
    assert cp.progress("d-00000001", "sent") and cp.indicator == "sent"
    assert cp.progress("d-00000001", "stored") and cp.indicator == "stored"
    assert not cp.progress("d-00000001", "sent") and cp.indicator == "stored"
    assert not cp.progress("d-00000001", "forwarded")
    assert cp.progress("d-00000001", "accepted", "114-HN-1") and cp.indicator == "accepted"
    assert cp.incident == "114-HN-1"
    assert not cp.progress("other-00000009", "failed")


def test_failed_shows_distinctly_and_a_late_acceptance_replaces_it():
    cp = CallPoint()
    _alarm(cp)
    cp.progress("d-00000001", "stored")
    assert cp.progress("d-00000001", "failed") and cp.indicator == "failed"
    assert not cp.progress("d-00000001", "stored") and cp.indicator == "failed"
    assert cp.progress("d-00000001", "accepted", "114-HN-2") and cp.indicator == "accepted"
    assert cp.incident == "114-HN-2"


def test_accepted_is_final():
    cp = CallPoint()
    _alarm(cp)
    assert cp.progress("d-00000001", "accepted", "114-HN-3")
    assert not cp.progress("d-00000001", "failed") and cp.indicator == "accepted"


def test_long_hold_in_window_cancels():
    cp = CallPoint(hold_cancel_ms=3000, cancel_window_s=30)
    _alarm(cp)
    assert cp.press(5000) is None
    assert cp.tick(7000) is None  # held 2 s: not yet
    assert cp.tick(8000) == "cancel"
    assert cp.indicator == "cancelled"
    assert cp.tick(9000) is None  # only once
    cp.raised("cancel", "d-00000002")
    assert not cp.progress("d-00000001", "accepted")  # the cancel wins on the indicator


def test_holding_the_first_press_does_not_cancel():
    cp = CallPoint(hold_cancel_ms=3000)
    assert cp.press(0) == "alarm"
    cp.raised("alarm", "d-00000001")
    assert cp.tick(5000) is None  # the occupant keeps the button down: still an alarm


def test_hold_after_window_is_a_new_alarm():
    cp = CallPoint(hold_cancel_ms=3000, cancel_window_s=30)
    _alarm(cp)
    assert cp.press(31000) == "alarm"
    assert cp.tick(35000) is None


def test_debouncer_ignores_bounces():
    d = Debouncer(ms=30)
    edges = []
    for t, level in ((0, True), (5, False), (10, True), (20, True), (45, True), (50, False), (60, True), (100, False), (140, False)):
        e = d.sample(level, t)
        if e:
            edges.append((e, t))
    assert edges == [("down", 45), ("up", 140)]


def test_indicator_patterns_drive_led_and_buzzer():
    led, buz = [], []
    ind = Indicator(led.append, buz.append)
    assert ind.show("alarm", 0)
    assert not ind.show("alarm", 10)
    assert led[-1] is True and buz[-1] is True
    ind.tick(100)
    assert led[-1] is False and buz[-1] is True
    ind.silence()
    ind.tick(200)
    assert buz[-1] is False


def test_what_the_occupant_saw_survives_a_reboot():
    cp = CallPoint()
    assert cp.saved() == ""
    cp.press(0)
    cp.raised("alarm", "d-5eed0001-00000001")
    cp.progress("d-5eed0001-00000001", "failed")
    again = CallPoint()  # after the reboot
    again.restore(cp.saved())
    assert (again.alarm_id, again.indicator, again.incident) == ("d-5eed0001-00000001", "failed", None)
    assert again.progress("d-5eed0001-00000001", "accepted", "114-HN-9")  # a later ack still moves it
    third = CallPoint()
    third.restore(again.saved())
    assert (third.indicator, third.incident) == ("accepted", "114-HN-9")
    for junk in ("", "one-word", "d-1 bogus-state", "d-1 idle"):
        cp = CallPoint()
        cp.restore(junk)
        assert cp.alarm_id is None and cp.indicator == "idle"

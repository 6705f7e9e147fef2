"""How the DC-09 sink acts on each reply (ACK, NAK, DUH, silence), against a scripted fake receiver."""

import dataclasses
import socketserver
import time
from datetime import datetime, timedelta, timezone

import pytest
from sink_helpers import ServedInThread, make_report

from bridge.sinks.dc09 import Dc09Sink
from bridge.sinks.dc09_frame import crc16_arc, decode, format_ts
from stack.ports import free_port


def reply(body: str) -> bytes:
    raw = body.encode("ascii")
    return b"\n" + f"{crc16_arc(raw):04X}{len(raw):04X}".encode() + raw + b"\r"


def ack(frame) -> bytes:
    return reply(f'"ACK"{frame.seq}R{frame.receiver}L{frame.line}#{frame.account}[]')


def nak(when: datetime) -> bytes:
    return reply(f'"NAK"0000R0L0A0[]_{format_ts(when)}')


def duh(frame) -> bytes:
    return reply(f'"DUH"{frame.seq}R{frame.receiver}L{frame.line}#{frame.account}[]')


class FakeReceiver(ServedInThread):
    """Answers each frame with script(frame) (bytes, or None for silence); keeps every frame it got."""

    def __init__(self, script, transport="tcp"):
        self.script, self.frames = script, []
        outer = self
        if transport == "tcp":

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    buf = b""
                    while b"\r" not in buf:
                        chunk = self.request.recv(4096)
                        if not chunk:
                            return
                        buf += chunk
                    answer = outer.take(buf)
                    if answer:
                        self.request.sendall(answer)
                    time.sleep(0.05)  # let the sink read before we close

            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), Handler)
        else:

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    data, sock = self.request
                    answer = outer.take(data)
                    if answer:
                        sock.sendto(answer, self.client_address)

            self.server = socketserver.ThreadingUDPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._serve()

    def take(self, raw: bytes):
        frame = decode(raw)
        self.frames.append(frame)
        return self.script(frame)



def sink_for(rx, transport="tcp", **options):
    return Dc09Sink(
        "arc", port=rx.port, transport=transport, timeout_s=options.pop("timeout_s", 2), **options
    )


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_ack_is_accepted_with_the_sequence_as_ref(transport):
    with FakeReceiver(ack, transport) as rx:
        outcome = sink_for(rx, transport).send(make_report())
    assert outcome.status == "accepted"
    assert outcome.ref == rx.frames[0].seq == "0001"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_nak_resynchronises_the_clock_and_the_resend_is_acked(transport):
    receiver_clock = datetime.now(timezone.utc) + timedelta(minutes=10)
    with FakeReceiver(lambda f: nak(receiver_clock) if len(rx.frames) == 1 else ack(f), transport) as rx:
        sink = sink_for(rx, transport)
        outcome = sink.send(make_report())
    assert outcome.status == "accepted"
    first, second = rx.frames
    assert first.seq == second.seq  # the same message again, not a new one
    assert second.timestamp - first.timestamp >= timedelta(minutes=9)
    assert 590 < sink.offset_s < 610


def test_nak_twice_is_a_retry_and_the_next_attempt_uses_the_receivers_time():
    receiver_clock = datetime.now(timezone.utc) - timedelta(hours=1)
    with FakeReceiver(lambda f: nak(receiver_clock)) as rx:
        sink = sink_for(rx)
        outcome = sink.send(make_report())
    assert outcome.status == "retry"
    assert "NAK" in outcome.detail
    assert len(rx.frames) == 2
    assert abs((rx.frames[1].timestamp - receiver_clock).total_seconds()) < 60


def test_duh_is_refused_for_the_operator():
    with FakeReceiver(duh) as rx:
        outcome = sink_for(rx).send(make_report())
    assert outcome.status == "refused"
    assert "DUH" in outcome.detail
    assert len(rx.frames) == 1


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_silence_is_a_retry(transport):
    with FakeReceiver(lambda f: None, transport) as rx:
        outcome = sink_for(rx, transport, timeout_s=0.3).send(make_report())
    assert outcome.status == "retry"
    assert len(rx.frames) == 1


def test_reply_for_another_sequence_is_not_taken_as_ack():
    with FakeReceiver(lambda f: reply(f'"ACK"9999R{f.receiver}L{f.line}#{f.account}[]')) as rx:
        outcome = sink_for(rx, timeout_s=0.5).send(make_report())
    assert outcome.status == "retry"


def test_corrupted_reply_is_a_retry():
    with FakeReceiver(lambda f: ack(f)[:-3] + b"XX\r") as rx:
        outcome = sink_for(rx, timeout_s=0.5).send(make_report())
    assert outcome.status == "retry"


def test_nobody_listening_is_a_retry():
    sink = Dc09Sink("arc", port=free_port(), timeout_s=0.5)
    outcome = sink.send(make_report())
    assert outcome.status == "retry"


def test_retries_of_one_event_keep_its_sequence_and_new_events_take_the_next():
    with FakeReceiver(ack) as rx:
        sink = sink_for(rx)
        a = make_report()
        b = make_report(event_id="hn-a-0001-00000018")
        refs = [sink.send(r).ref for r in (a, a, b, a)]
    assert refs == ["0001", "0001", "0002", "0001"]


def test_sequence_survives_a_restart_with_state_path(tmp_path):
    state = str(tmp_path / "arc.seq")
    with FakeReceiver(ack) as rx:
        first = sink_for(rx, state_path=state)
        first.send(make_report())
        first.send(make_report(event_id="hn-a-0001-00000018"))
        again = sink_for(rx, state_path=state)
        assert again.send(make_report()).ref == "0001"
        assert again.send(make_report(event_id="hn-a-0001-00000019")).ref == "0003"


def test_sequence_wraps_from_9999_to_0001():
    with FakeReceiver(ack) as rx:
        sink = sink_for(rx)
        sink.seqs.last = 9998
        refs = [sink.send(make_report(event_id=f"hn-a-0001-{i:08d}")).ref for i in range(3)]
    assert refs == ["9999", "0001", "0002"]


def test_routing_comes_from_the_site_with_sink_defaults():
    with FakeReceiver(ack) as rx:
        sink = sink_for(rx, account="9999", receiver="2", line="3")
        site = dataclasses.replace(make_report().site, dc09_account="", dc09_receiver="", dc09_line="")
        sink.send(make_report(site=site))
        sink.send(
            make_report(event_id="hn-a-0001-00000018", site=dataclasses.replace(site, dc09_account="AB12"))
        )
    assert [(f.account, f.receiver, f.line) for f in rx.frames] == [("9999", "2", "3"), ("AB12", "2", "3")]


def test_no_account_anywhere_is_refused():
    site = dataclasses.replace(make_report().site, dc09_account="")
    outcome = Dc09Sink("arc", port=free_port()).send(make_report(site=site))
    assert outcome.status == "refused"


def test_prealarm_is_held_back_unless_enabled():
    with FakeReceiver(ack) as rx:
        held = sink_for(rx).send(make_report(type="prealarm"))
        sent = sink_for(rx, send_prealarm=True).send(make_report(type="prealarm"))
    assert held.status == sent.status == "accepted"
    assert [f.data for f in rx.frames] == ["#1234|Nri1/FG001"]


def test_supervision_thread_sends_null_frames_while_idle():
    with FakeReceiver(ack) as rx:
        sink = sink_for(rx, account="1234", supervision_s=0.2)
        try:
            deadline = time.monotonic() + 5
            while len(rx.frames) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            sink.close()
    assert len(rx.frames) >= 2
    assert {f.id for f in rx.frames} == {"NULL"}
    assert all(f.account == "1234" and f.data == "" for f in rx.frames)


def test_supervise_skips_accounts_that_spoke_recently():
    with FakeReceiver(ack) as rx:
        sink = sink_for(rx, supervision_s=3600)
        sink.close()  # no thread: the bridge calls supervise() itself
        sink.send(make_report())
        assert sink.supervise() == {}
        assert set(sink.supervise(force=True)) == {"1234"}
    assert [f.id for f in rx.frames] == ["SIA-DCS", "NULL"]

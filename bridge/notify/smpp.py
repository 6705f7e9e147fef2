"""SMS over SMPP 3.4 to an operator's SMSC, through smpplib: one transceiver session, kept up.

Vietnamese text goes as UCS-2, split into concatenated parts (smpplib.gsm.make_parts); every part
asks for a delivery receipt. Receipts (deliver_sm with esm_class 0x04, SMPP 3.4 Appendix B text) and
replies from handsets (mobile originated deliver_sm) reach on_event from the session's thread. The
session reconnects with a backoff; while it is down, send() raises NotifyError and the callout
worker tries again.
"""

from __future__ import annotations

import logging
import re
import threading

import smpplib.client
import smpplib.consts
import smpplib.gsm

from . import NotifyError, Receipt, Reply

log = logging.getLogger("bridge.notify")

RESP_TIMEOUT_S = 10.0
LOST = -1  # the session ended before the SMSC answered
_STAT = re.compile(rb"id:(\S+).*?stat:(\w+)", re.S)


class _Waiting:
    """A submit waiting for its submit_sm_resp."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.status: int | None = None
        self.msg_id = ""


class SmppNotifier:
    def __init__(self, name: str = "sms", host: str = "127.0.0.1", port: int = 2775, system_id: str = "",
                 password: str = "", source: str = "114", source_ton: int = 5, timeout_s: float = 10.0):
        self.name = name
        self.host, self.port = host, int(port)
        self.system_id, self.password = system_id, password
        self.source, self.source_ton = source, int(source_ton)  # TON 5: alphanumeric sender
        self.timeout_s = float(timeout_s)
        self._client: smpplib.client.Client | None = None
        self._bound = threading.Event()
        self._send_lock = threading.Lock()
        self._resp_lock = threading.Lock()
        self._waiting: dict[int, _Waiting] = {}  # by sequence number
        self._stopping = threading.Event()
        self._on_event = None
        self.down_reason = "not connected yet"

    # --- session ---
    def start(self, on_event) -> None:
        self._on_event = on_event
        threading.Thread(target=self._run, name=f"notify-{self.name}", daemon=True).start()

    def wait_bound(self, timeout: float) -> bool:
        return self._bound.wait(timeout)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            client = smpplib.client.Client(self.host, self.port, timeout=self.timeout_s,
                                           allow_unknown_opt_params=True)
            client.send_pdu = self._locked(client.send_pdu)  # the listener answers too: one writer at a time
            client.set_message_sent_handler(self._sent)
            client.set_message_received_handler(self._received)
            try:
                client.connect()
                client.bind_transceiver(system_id=self.system_id, password=self.password)
                self._client = client
                self._bound.set()
                backoff = 1.0
                log.info("smsc bound", extra={"notifier": self.name, "host": self.host, "port": self.port})
                client.listen()
            except Exception as e:  # smpplib raises its own errors, OSError and ValueError alike
                self.down_reason = f"{type(e).__name__}: {e}"[:200]
                if not self._stopping.is_set():
                    log.warning("smsc session lost; reconnecting", extra={"notifier": self.name,
                                                                          "detail": self.down_reason})
            finally:
                self._bound.clear()
                self._client = None
                self._fail_waiting()
                try:
                    client.disconnect()
                except Exception:
                    pass
            self._stopping.wait(backoff)
            backoff = min(30.0, backoff * 2)

    def _locked(self, send_pdu):
        def send(p):
            with self._send_lock:
                return send_pdu(p)
        return send

    def close(self) -> None:
        self._stopping.set()
        client = self._client
        if client is not None:
            try:
                client.unbind()
            except Exception:
                pass
            try:
                client.disconnect()
            except Exception:
                pass

    # --- sending ---
    def send(self, to: str, text: str) -> str:
        """Submit `text` to `to` (international digits, '+' optional); returns the part ids, space-separated."""
        client = self._client
        if client is None or not self._bound.is_set():
            raise NotifyError(f"not connected to the SMSC ({self.down_reason})")
        parts, coding, esm = smpplib.gsm.make_parts(text)
        dest = to.lstrip("+")
        ids = []
        for part in parts:
            w = _Waiting()
            with self._resp_lock:  # the answer may come before send_message returns: _sent waits for this
                try:
                    p = client.send_message(
                        source_addr_ton=self.source_ton, source_addr_npi=smpplib.consts.SMPP_NPI_UNK,
                        source_addr=self.source, dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                        dest_addr_npi=smpplib.consts.SMPP_NPI_ISDN, destination_addr=dest, short_message=part,
                        data_coding=coding, esm_class=esm, registered_delivery=True)
                except Exception as e:
                    raise NotifyError(f"submit failed: {type(e).__name__}: {e}") from None
                self._waiting[p.sequence] = w
            if not w.done.wait(RESP_TIMEOUT_S):
                self._waiting.pop(p.sequence, None)
                raise NotifyError("the SMSC did not answer the submit")
            if w.status == LOST:
                raise NotifyError("the SMSC session was lost before it answered")
            if w.status != 0:
                raise NotifyError(f"the SMSC refused the submit (command_status 0x{w.status or 0:08x})")
            ids.append(w.msg_id)
        return " ".join(ids)

    def _sent(self, pdu) -> None:
        with self._resp_lock:
            w = self._waiting.pop(pdu.sequence, None)
        if w is not None:
            mid = pdu.message_id
            w.status, w.msg_id = pdu.status, mid.decode("latin-1") if isinstance(mid, bytes) else str(mid)
            w.done.set()

    def _fail_waiting(self) -> None:
        for w in list(self._waiting.values()):
            w.status = LOST
            w.done.set()
        self._waiting.clear()

    # --- hearing back ---
    def _received(self, pdu):
        raw = pdu.short_message or b""
        try:
            if pdu.esm_class & 0x04:  # a delivery receipt
                m = _STAT.search(raw)
                if m is not None and self._on_event:
                    stat = m.group(2).decode()
                    self._on_event(Receipt(m.group(1).decode(), stat == "DELIVRD", stat))
            elif self._on_event:
                text = raw.decode("utf-16-be" if pdu.data_coding == 8 else "latin-1", errors="replace")
                sender = pdu.source_addr.decode("latin-1") if isinstance(pdu.source_addr, bytes) else str(pdu.source_addr)
                self._on_event(Reply(sender, text))
        except Exception:
            log.exception("notifier: a message from the SMSC could not be handled")
        return None  # ESME_ROK: the deliver_sm_resp says we have it

"""A reference SMSC: the mobile operator's side of SMPP 3.4, as intake/server.py is the 114 centre's side
of its API. The bridge's SMS notifier (bridge/notify/smpp.py) is tested against it over the network.

    python -m intake.smsc --port 0 --accounts FILE [--control-port 0] [--deliver-ms 200]

SMPP 3.4 (SMS Forum, "Short Message Peer to Peer Protocol Specification" v3.4, 1999): bind_transceiver,
bind_transmitter, bind_receiver; submit_sm with its message id; enquire_link; unbind; generic_nack for
what it does not know. A submitted message is "delivered" to its handset `--deliver-ms` later, and a
delivery receipt (deliver_sm, esm_class 0x04, Appendix B's `id:... stat:DELIVRD` text) goes back when
registered_delivery asks for one; numbers set unreachable get `stat:UNDELIV`. Concatenated parts (UDH,
esm_class 0x40) are joined into one message. UCS-2 (data_coding 8) and the default alphabet as ASCII are
decoded.

Accounts file: one `system_id password` per line (# comments). The control API on loopback (for tests
and `make run`) is JSON over HTTP:
  GET  /messages              every message received: id, from, to, text, parts, status
  POST /reply {from, to, text} a handset's reply: a deliver_sm (mobile originated) to the bound ESMEs
  POST /unreachable {numbers}  these handsets cannot be reached from now on
Prints `smsc ready port=<p> control=<c>` once both listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# command ids (SMPP 3.4 section 5.1.2.1)
GENERIC_NACK = 0x80000000
BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x00000001, 0x00000002, 0x00000009
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x00000004, 0x00000005, 0x00000006, 0x00000015
RESP = 0x80000000
# command_status (section 5.1.3)
ROK, RINVCMDLEN, RINVCMDID, RINVBNDSTS, RALYBND = 0x00, 0x01, 0x03, 0x04, 0x05
RINVDSTADR, RBINDFAIL, RINVPASWD, RINVSYSID, RSYSERR = 0x0B, 0x0D, 0x0E, 0x0F, 0x08
MAX_PDU = 64 * 1024


class PduError(ValueError):
    pass


def _cstr(body: bytes, pos: int, maxlen: int) -> tuple[str, int]:
    end = body.find(b"\0", pos, pos + maxlen)
    if end < 0:
        raise PduError("C-Octet String without its NULL within its maximum length")
    return body[pos:end].decode("latin-1"), end + 1


def pdu(command_id: int, status: int, seq: int, body: bytes = b"") -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def cstr(s: str) -> bytes:
    return s.encode("latin-1") + b"\0"


def parse_bind(body: bytes) -> tuple[str, str]:
    system_id, p = _cstr(body, 0, 16)
    password, p = _cstr(body, p, 9)
    return system_id, password


def parse_sm(body: bytes) -> dict:
    """submit_sm / deliver_sm mandatory parameters (section 4.4.1), and message_payload if present."""
    p = 0
    out: dict = {}
    out["service_type"], p = _cstr(body, p, 6)
    out["source_ton"], out["source_npi"] = body[p], body[p + 1]
    out["source"], p = _cstr(body, p + 2, 21)
    out["dest_ton"], out["dest_npi"] = body[p], body[p + 1]
    out["dest"], p = _cstr(body, p + 2, 21)
    out["esm_class"], out["protocol_id"], out["priority"] = body[p], body[p + 1], body[p + 2]
    _sched, p = _cstr(body, p + 3, 17)
    _valid, p = _cstr(body, p, 17)
    out["registered_delivery"], _replace, out["data_coding"], _dflt, n = body[p:p + 5]
    p += 5
    out["short_message"] = body[p:p + n]
    if len(out["short_message"]) != n:
        raise PduError("short_message shorter than sm_length")
    p += n
    while p + 4 <= len(body):  # optional parameters: tag, length, value
        tag, ln = struct.unpack(">HH", body[p:p + 4])
        if tag == 0x0424:
            out["short_message"] = body[p + 4:p + 4 + ln]
        p += 4 + ln
    return out


def sm_body(source: str, dest: str, esm_class: int, data_coding: int, message: bytes) -> bytes:
    if len(message) > 254:
        raise PduError("short_message over 254 octets")
    return (cstr("") + bytes([1, 1]) + cstr(source) + bytes([1, 1]) + cstr(dest)
            + bytes([esm_class, 0, 0]) + cstr("") + cstr("") + bytes([0, 0, data_coding, 0, len(message)])
            + message)


def decode_text(data_coding: int, raw: bytes) -> str:
    if data_coding == 8:
        return raw.decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


def split_udh(esm_class: int, raw: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """(reference, total, index) of a concatenated part (IEI 0x00 or 0x08), and the text without the UDH."""
    if not esm_class & 0x40 or not raw:
        return None, raw
    udhl = raw[0]
    udh, text = raw[1:1 + udhl], raw[1 + udhl:]
    i = 0
    while i + 2 <= len(udh):
        iei, ln = udh[i], udh[i + 1]
        v = udh[i + 2:i + 2 + ln]
        if iei == 0x00 and ln == 3:
            return (v[0], v[1], v[2]), text
        if iei == 0x08 and ln == 4:
            return (v[0] << 8 | v[1], v[2], v[3]), text
        i += 2 + ln
    return None, text


def receipt_text(msg_id: str, stat: str, submitted: float, done: float, text: str) -> bytes:
    """SMPP 3.4 Appendix B: the delivery receipt's short_message."""
    fmt = "%y%m%d%H%M"
    dlvrd = "001" if stat == "DELIVRD" else "000"
    err = "000" if stat == "DELIVRD" else "001"
    return (f"id:{msg_id} sub:001 dlvrd:{dlvrd} submit date:{time.strftime(fmt, time.gmtime(submitted))} "
            f"done date:{time.strftime(fmt, time.gmtime(done))} stat:{stat} err:{err} text:{text[:20]}"
            ).encode("latin-1", errors="replace")


class Smsc:
    def __init__(self, accounts: dict[str, str], deliver_ms: int = 200):
        self.accounts = accounts
        self.deliver_s = deliver_ms / 1000
        self.messages: list[dict] = []
        self.unreachable: set[str] = set()
        self.sessions: set[Session] = set()
        self._next_id = 1
        self._parts: dict[tuple, dict] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            i, self._next_id = self._next_id, self._next_id + 1
        return f"{i:010x}"

    async def serve(self, host: str, port: int) -> asyncio.base_events.Server:
        self.loop = asyncio.get_running_loop()
        return await asyncio.start_server(lambda r, w: Session(self, r, w).run(), host, port)

    def submitted(self, session: Session, sm: dict, msg_id: str) -> None:
        """A submit_sm taken: join its parts, then deliver (or not) and send the receipt."""
        ref, raw = split_udh(sm["esm_class"], sm["short_message"])
        text = decode_text(sm["data_coding"], raw)
        if ref is not None:
            key = (sm["source"], sm["dest"], ref[0], ref[1])
            whole = self._parts.setdefault(key, {"parts": {}, "ids": []})
            whole["parts"][ref[2]] = text
            whole["ids"].append(msg_id)
            if len(whole["parts"]) < ref[1]:
                self._receipt_later(session, sm, msg_id, text)
                return
            del self._parts[key]
            text = "".join(whole["parts"][i] for i in sorted(whole["parts"]))
            parts = len(whole["ids"])
        else:
            parts = 1
        status = "UNDELIV" if sm["dest"] in self.unreachable else "DELIVRD"
        with self._lock:
            self.messages.append({"id": msg_id, "from": sm["source"], "to": sm["dest"], "text": text,
                                  "parts": parts, "status": status, "at": time.time(),
                                  "system_id": session.system_id})
        self._receipt_later(session, sm, msg_id, text)

    def _receipt_later(self, session: Session, sm: dict, msg_id: str, text: str) -> None:
        if not sm["registered_delivery"] & 0x03:
            return
        status = "UNDELIV" if sm["dest"] in self.unreachable else "DELIVRD"
        submitted = time.time()

        def send():
            body = sm_body(sm["dest"], sm["source"], 0x04, 0,
                           receipt_text(msg_id, status, submitted, time.time(), text))
            session.send_request(DELIVER_SM, body)
        assert self.loop is not None
        self.loop.call_later(self.deliver_s, send)

    def reply(self, frm: str, to: str, text: str) -> int:
        """A handset's message to `to` (mobile originated): to every bound receiving session."""
        raw = text.encode("utf-16-be")
        body = sm_body(frm, to, 0x00, 8, raw[:254])
        n = 0
        for s in list(self.sessions):
            if s.receives:
                s.send_request(DELIVER_SM, body)
                n += 1
        return n


class Session:
    def __init__(self, smsc: Smsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.smsc, self.reader, self.writer = smsc, reader, writer
        self.system_id: str | None = None
        self.transmits = self.receives = False
        self._seq = 0

    def send_request(self, command_id: int, body: bytes) -> None:
        self._seq = self._seq % 0x7FFFFFFF + 1
        if not self.writer.is_closing():
            self.writer.write(pdu(command_id, ROK, self._seq, body))

    async def run(self) -> None:
        try:
            while True:
                head = await self.reader.readexactly(16)
                length, cid, _status, seq = struct.unpack(">IIII", head)
                if not 16 <= length <= MAX_PDU:
                    self.writer.write(pdu(GENERIC_NACK, RINVCMDLEN, seq))
                    break
                body = await self.reader.readexactly(length - 16)
                self.handle(cid, seq, body)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.smsc.sessions.discard(self)
            self.writer.close()

    def handle(self, cid: int, seq: int, body: bytes) -> None:
        w = self.writer
        if cid & RESP:  # a response to our deliver_sm, or a generic_nack: nothing to do
            return
        if cid in (BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER):
            if self.system_id is not None:
                w.write(pdu(cid | RESP, RALYBND, seq))
                return
            try:
                system_id, password = parse_bind(body)
            except (PduError, IndexError):
                w.write(pdu(cid | RESP, RBINDFAIL, seq))
                return
            if system_id not in self.smsc.accounts:
                w.write(pdu(cid | RESP, RINVSYSID, seq))
                return
            if self.smsc.accounts[system_id] != password:
                w.write(pdu(cid | RESP, RINVPASWD, seq))
                return
            self.system_id = system_id
            self.transmits = cid in (BIND_TRANSMITTER, BIND_TRANSCEIVER)
            self.receives = cid in (BIND_RECEIVER, BIND_TRANSCEIVER)
            self.smsc.sessions.add(self)
            w.write(pdu(cid | RESP, ROK, seq, cstr("ref-smsc")))
        elif cid == ENQUIRE_LINK:
            w.write(pdu(ENQUIRE_LINK | RESP, ROK, seq))
        elif cid == UNBIND:
            w.write(pdu(UNBIND | RESP, ROK, seq))
            self.smsc.sessions.discard(self)
            self.system_id = None
        elif cid == SUBMIT_SM:
            if not self.transmits:
                w.write(pdu(SUBMIT_SM | RESP, RINVBNDSTS, seq))
                return
            try:
                sm = parse_sm(body)
            except (PduError, IndexError):
                w.write(pdu(SUBMIT_SM | RESP, RSYSERR, seq))
                return
            if not sm["dest"]:
                w.write(pdu(SUBMIT_SM | RESP, RINVDSTADR, seq))
                return
            msg_id = self.smsc.new_id()
            w.write(pdu(SUBMIT_SM | RESP, ROK, seq, cstr(msg_id)))
            self.smsc.submitted(self, sm, msg_id)
        else:
            w.write(pdu(GENERIC_NACK, RINVCMDID, seq))


def control_server(smsc: Smsc, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, code: int, obj) -> None:
            data = json.dumps(obj, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/messages":
                with smsc._lock:
                    self._json(200, list(smsc.messages))
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self):
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except ValueError:
                self._json(400, {"error": "body is not JSON"})
                return
            assert smsc.loop is not None
            if self.path == "/reply" and all(isinstance(body.get(k), str) for k in ("from", "to", "text")):
                fut = asyncio.run_coroutine_threadsafe(_call(smsc.reply, body["from"], body["to"], body["text"]),
                                                       smsc.loop)
                self._json(200, {"sent_to_sessions": fut.result(5)})
            elif self.path == "/unreachable" and isinstance(body.get("numbers"), list):
                smsc.unreachable.update(str(n) for n in body["numbers"])
                self._json(200, {"unreachable": sorted(smsc.unreachable)})
            else:
                self._json(400, {"error": "POST /reply {from, to, text} or /unreachable {numbers: [...]}"})

    return ThreadingHTTPServer((host, port), Handler)


async def _call(fn, *args):
    return fn(*args)


def read_accounts(path: Path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) > 15 or len(parts[1]) > 8:
            raise SystemExit(f"{path}:{n}: expected 'system_id password' (at most 15 and 8 characters)")
        out[parts[0]] = parts[1]
    return out


async def amain(args) -> None:
    smsc = Smsc(read_accounts(Path(args.accounts)), args.deliver_ms)
    server = await smsc.serve(args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    ctl = control_server(smsc, args.host, args.control_port)
    threading.Thread(target=ctl.serve_forever, daemon=True).start()
    print(f"smsc ready port={port} control={ctl.server_address[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m intake.smsc", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0)
    p.add_argument("--accounts", required=True, help="file of 'system_id password' lines")
    p.add_argument("--deliver-ms", type=int, default=200, help="submit -> delivery receipt (default 200)")
    args = p.parse_args(argv)
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

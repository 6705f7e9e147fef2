# The serial console protocol: one JSON object per line each way (docs/protocol.md section 9).
import json

from compat import const, ticks_diff, ticks_ms

_ERROR_EVERY_MS = const(10000)  # one `error` line per loop this often; the rest are counted in it

# The test-rig commands (rig.py registers them only when the rig is enabled); named here so that a
# device without the rig says why it refuses them, without loading the rig.
RIG_COMMANDS = ("press", "button", "net", "hang", "hog", "sensor", "nmea", "fail", "panel")


class Console:
    def __init__(self, write):
        self._write = write  # callable taking a str (one whole line, newline included)
        self._handlers = {}
        self.errors = 0  # exceptions the loops survived (not MemoryError): `status` and `heap` show it
        self._told = {}  # loop -> [ticks of its last error line, errors since]

    def register(self, name, handler):
        """handler(args: dict) -> dict of reply fields (ok is added), or raises ValueError."""
        self._handlers[name] = handler

    def send(self, obj):
        try:
            self._write(json.dumps(obj, separators=(",", ":")) + "\n")
        except Exception:
            pass  # a console nobody reads must never stop the alarm path

    def emit(self, ev, **fields):
        fields["ev"] = ev
        self.send(fields)

    def error(self, where, e):
        """An exception one of the loops caught and survived: counted, and told on the console at
        most once per loop every 10 s (with how many came since), so a failing step that is retried
        every few milliseconds cannot flood the console or the heap."""
        self.errors += 1
        now = ticks_ms()
        t = self._told.get(where)
        if t is None:
            t = self._told[where] = [ticks_diff(now, _ERROR_EVERY_MS), 0]
        t[1] += 1
        if ticks_diff(now, t[0]) >= _ERROR_EVERY_MS:
            self.emit("error", where=where, error=(e if isinstance(e, str) else repr(e))[:80], n=t[1])
            t[0], t[1] = now, 0

    def handle(self, line):
        """One input line -> the reply dict (also sent), or None for blank lines."""
        if isinstance(line, (bytes, bytearray)):
            try:
                line = line.decode()
            except UnicodeError:
                line = ""
        line = line.strip()
        if not line:
            return None
        try:
            req = json.loads(line)
        except ValueError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            reply = {"re": None, "ok": False, "error": "expected a JSON object with a 'cmd' string"}
            self.send(reply)
            return reply
        name = req["cmd"]
        reply = {"re": name}
        if "tag" in req:
            reply["tag"] = req["tag"]
        handler = self._handlers.get(name)
        if handler is None and name in RIG_COMMANDS:
            reply["ok"] = False
            reply["error"] = "test-rig command: this device was not provisioned with the test rig enabled"
        elif handler is None:
            reply["ok"] = False
            reply["error"] = "unknown command; known: " + ",".join(sorted(self._handlers))
        else:
            try:
                out = handler(req)
                reply["ok"] = True
                if out:
                    reply.update(out)
            except Exception as e:  # a bad request never takes the device down
                reply["ok"] = False
                reply["error"] = str(e) or e.__class__.__name__
        self.send(reply)
        return reply

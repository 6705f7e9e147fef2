# The serial console protocol: one JSON object per line each way (docs/protocol.md section 9).
import json

# The test-rig commands (rig.py registers them only when the rig is enabled); named here so that a
# device without the rig says why it refuses them, without loading the rig.
RIG_COMMANDS = ("press", "button", "net", "hang", "hog", "sensor", "nmea")


class Console:
    def __init__(self, write):
        self._write = write  # callable taking a str (one whole line, newline included)
        self._handlers = {}

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

# HMAC-SHA256 (RFC 2104) and the signed frame of docs/protocol.md section 3.
# MicroPython has hashlib.sha256 but no hmac module, so it is written once, here.
import hashlib

try:
    from binascii import hexlify, unhexlify
except ImportError:  # pragma: no cover
    from ubinascii import hexlify, unhexlify

_BLOCK = 64
_IPAD = bytes(0x36 for _ in range(_BLOCK))
_OPAD = bytes(0x5C for _ in range(_BLOCK))


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


class Signer:
    """HMAC-SHA256 with one key; the padded key blocks are computed once, not per message."""

    def __init__(self, key):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key + bytes(_BLOCK - len(key))
        self._ik = _xor(key, _IPAD)
        self._ok = _xor(key, _OPAD)

    def digest(self, msg):
        inner = hashlib.sha256(self._ik)
        inner.update(msg)
        outer = hashlib.sha256(self._ok)
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, msg):
        return hexlify(self.digest(msg)).decode()

    def frame(self, body):
        """body (bytes, no line feed) -> the signed frame sent on the wire (a bytearray)."""
        if b"\n" in body:
            raise ValueError("body contains a line feed")
        n = len(body)
        out = bytearray(n + 65)  # one buffer, not a copy per concatenation: the heap is small
        out[:n] = body
        out[n] = 10
        out[n + 1:] = hexlify(self.digest(body))
        return out

    def open(self, frame):
        """Signed frame -> body bytes, or None when it is malformed or the signature fails."""
        if not isinstance(frame, (bytes, bytearray)):
            return None
        i = frame.find(b"\n")
        if i < 0 or len(frame) - i - 1 != 64:
            return None
        body = bytes(frame[:i])
        try:
            sig = unhexlify(bytes(frame[i + 1 :]))
        except ValueError:
            return None
        return body if equal(self.digest(body), sig) else None


def hmac_sha256(key, msg):
    return Signer(key).digest(msg)


def equal(a, b):
    """Constant-time comparison, so a forger learns nothing from timing."""
    if len(a) != len(b):
        return False
    r = 0
    for x, y in zip(a, b):
        r |= x ^ y
    return r == 0


def parse_key(text):
    """64 hex digits -> 32 key bytes; ValueError otherwise."""
    if not isinstance(text, str) or len(text) != 64:
        raise ValueError("key must be 64 hex digits")
    try:
        return unhexlify(text)
    except Exception:
        raise ValueError("key must be 64 hex digits")

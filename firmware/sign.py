# HMAC-SHA256 (RFC 2104), the MAC of the signed frames (protocol.py, docs/protocol.md section 3).
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

    def hexmac(self, msg):
        """The 64 lower-case hex digits (bytes) that end a signed frame."""
        return hexlify(self.digest(msg))


def hmac_sha256(key, msg):
    return Signer(key).digest(msg)


def parse_key(text):
    """64 hex digits -> 32 key bytes; ValueError otherwise."""
    if not isinstance(text, str) or len(text) != 64:
        raise ValueError("key must be 64 hex digits")
    try:
        return unhexlify(text)
    except Exception:
        raise ValueError("key must be 64 hex digits")

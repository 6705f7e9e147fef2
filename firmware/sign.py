# HMAC-SHA256 (RFC 2104), the MAC of the signed frames (protocol.py, docs/protocol.md section 3).
# MicroPython has hashlib.sha256 but no hmac module, so it is written once, here.
import hashlib
from binascii import hexlify, unhexlify


class Signer:
    """HMAC-SHA256 with one key; the padded key blocks are computed once, not per message."""

    def __init__(self, key):
        if len(key) > 64:  # the hash's block size
            key = hashlib.sha256(key).digest()
        key = key + bytes(64 - len(key))
        self._ik = bytes(x ^ 0x36 for x in key)  # ipad and opad (RFC 2104), no tables kept in RAM
        self._ok = bytes(x ^ 0x5C for x in key)

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

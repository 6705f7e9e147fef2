# HMAC-SHA256 against RFC 4231 test vectors, and the signed frame.
from binascii import hexlify, unhexlify

from sign import Signer, hmac_sha256, parse_key
from util import raises

# RFC 4231, test cases 1, 2, 6 (key longer than the block) and 7.
VECTORS = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131,
     b"This is a test using a larger than block-size key and a larger than block-size data. "
     b"The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


def test_rfc4231_vectors():
    for key, msg, want in VECTORS:
        assert hmac_sha256(key, msg) == unhexlify(want), want


def test_hexmac_is_the_frame_signature():
    s = Signer(bytes(range(32)))
    assert s.hexmac(b"abc") == hexlify(hmac_sha256(bytes(range(32)), b"abc"))
    assert len(s.hexmac(b"")) == 64


def test_parse_key():
    assert parse_key("00" * 32) == bytes(32)
    assert raises(ValueError, parse_key, "00" * 31)
    assert raises(ValueError, parse_key, "zz" * 32)
    assert raises(ValueError, parse_key, None)

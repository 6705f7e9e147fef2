"""Release bundles as the bridge reads them: a good one round-trips, and every kind of bad one is refused
with the reason that names its most basic fault."""

import gzip
import hashlib
import io
import json
import tarfile
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.ota.bundle import (
    MAX_BYTES,
    BundleError,
    bundle_bytes,
    compare_versions,
    fingerprint,
    load_private_key,
    load_public_key,
    pack_payload,
    read_bundle,
    unpack_payload,
    write_bundle,
)

PARTS = [("app.mpy", b"M\x06app-bytes" * 50), ("board/esp32.mpy", b"M\x06board"),
         ("detect/smoke.mpy", bytes(range(256)) * 3)]
BASE = {"format": 1, "product": "baochay-edge", "version": "0.2.0", "security_version": 2, "min_base": "1.24.0",
        "boards": ["virtual", "virtual-panic"], "created": "2026-12-03T16:50:00Z"}


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key():
    return Ed25519PrivateKey.generate()


# -- crafting bundles by hand, independently of the writer under test ----------------------------


def tar(members, fmt=tarfile.USTAR_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def untar(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def manifest_for(parts, payload=None, **changes):
    payload = pack_payload(parts) if payload is None else payload
    m = {**BASE, "payload": {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
         "parts": [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in parts]}
    m.update(changes)
    return m


def encode(m):
    return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()


def sig(manifest_bytes, key):
    return key.sign(manifest_bytes).hex().encode() + b"\n"


def craft(key, manifest=None, payload=None, manifest_bytes=None, signature=None):
    """A bundle from its pieces: whatever manifest, signed with `key` unless a signature is given."""
    payload = pack_payload(PARTS) if payload is None else payload
    mb = manifest_bytes if manifest_bytes is not None else encode(manifest or manifest_for(PARTS))
    return tar([("manifest.json", mb), ("manifest.sig", signature or sig(mb, key)), ("payload.bin", payload)])


def refused(data, key):
    with pytest.raises(BundleError) as e:
        read_bundle(data, key.public_key())
    assert e.value.detail and e.value.reason in str(e.value)
    return e.value


# -- a good bundle --------------------------------------------------------------------------------


def test_a_bundle_round_trips_from_a_file(tmp_path, key):
    path = tmp_path / "baochay-0.2.0.bcb"
    write_bundle(path, dict(BASE), pack_payload(PARTS), key)
    b = read_bundle(path, key.public_key())
    assert (b.version, b.security_version, b.min_base, b.boards) == ("0.2.0", 2, "1.24.0", ["virtual", "virtual-panic"])
    assert b.parts == PARTS
    assert b.payload == pack_payload(PARTS) and b.size == len(b.payload)
    assert b.sha256 == hashlib.sha256(b.payload).hexdigest() == b.manifest["payload"]["sha256"]
    assert b.manifest["parts"] == [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                                   for n, d in PARTS]
    # what is signed is the compact, sorted JSON of the manifest, exactly as stored
    assert b.manifest_bytes == encode(b.manifest)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left beside it


def test_the_tar_is_plain_posix_with_three_fixed_members(key):
    data = bundle_bytes(dict(BASE), pack_payload(PARTS), key)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["manifest.json", "manifest.sig", "payload.bin"]
    assert all((m.mtime, m.uid, m.gid, m.mode, m.isreg()) == (0, 0, 0, 0o644, True) for m in members)
    assert data[257:262] == b"ustar"
    names = dict(untar(data))
    assert len(names["manifest.sig"]) == 129 and names["manifest.sig"].endswith(b"\n")
    key.public_key().verify(bytes.fromhex(names["manifest.sig"][:128].decode()), names["manifest.json"])


def test_the_same_inputs_give_the_same_bytes(tmp_path, key):
    a, b = tmp_path / "a.bcb", tmp_path / "b.bcb"
    write_bundle(a, dict(BASE), pack_payload(PARTS), key)
    write_bundle(b, dict(BASE), pack_payload(PARTS), key)
    assert a.read_bytes() == b.read_bytes() == bundle_bytes(dict(BASE), pack_payload(PARTS), key)


def test_the_writer_refuses_a_manifest_that_does_not_describe_the_payload(tmp_path, key):
    wrong = manifest_for(PARTS[:2])  # parts of another payload
    with pytest.raises(BundleError) as e:
        write_bundle(tmp_path / "x.bcb", wrong, pack_payload(PARTS), key)
    assert e.value.reason == "bad-hash"
    with pytest.raises(BundleError) as e:
        write_bundle(tmp_path / "x.bcb", {**BASE, "version": "1.2"}, pack_payload(PARTS), key)
    assert e.value.reason == "bad-manifest" and "'1.2'" in e.value.detail
    assert list(tmp_path.iterdir()) == []


# -- not-a-bundle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"this is not a tar file\n" * 40, bytes(1024)],
                         ids=["empty", "text", "an-empty-tar"])
def test_what_is_not_a_tar_of_three_members_is_not_a_bundle(data, key):
    assert refused(data, key).reason == "not-a-bundle"


def test_a_compressed_tar_is_not_a_bundle(key):
    assert refused(gzip.compress(craft(key), mtime=0), key).reason == "not-a-bundle"


@pytest.mark.parametrize("arrange", ["missing", "extra", "order", "directory", "dot-slash"])
def test_members_missing_extra_or_out_of_order_are_not_a_bundle(arrange, key):
    mb = encode(manifest_for(PARTS))
    members = [("manifest.json", mb), ("manifest.sig", sig(mb, key)), ("payload.bin", pack_payload(PARTS))]
    if arrange == "missing":
        del members[1]
    elif arrange == "extra":
        members.append(("notes.txt", b"hello"))
    elif arrange == "order":
        members[0], members[1] = members[1], members[0]
    elif arrange == "directory":
        members.insert(0, ("ota", None))
    else:
        members[2] = ("./payload.bin", members[2][1])
    e = refused(tar(members), key)
    assert e.reason == "not-a-bundle"
    assert "manifest.json, manifest.sig, payload.bin" in e.detail or "not a regular file" in e.detail


def test_a_file_over_4_mib_is_refused_before_it_is_read(tmp_path, key):
    big = tmp_path / "huge.bcb"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 ** 3)  # sparse: 64 GiB that nobody could read into memory
    t = time.monotonic()
    e = refused(big, key)
    assert time.monotonic() - t < 2
    assert e.reason == "not-a-bundle" and "huge.bcb" in e.detail and "4,194,304" in e.detail
    assert refused(bytes(MAX_BYTES + 1), key).reason == "not-a-bundle"


def test_a_missing_file_is_not_a_bundle(tmp_path, key):
    e = refused(tmp_path / "nope.bcb", key)
    assert e.reason == "not-a-bundle" and "nope.bcb" in e.detail


# -- bad-manifest ---------------------------------------------------------------------------------


def without(field):
    m = manifest_for(PARTS)
    del m[field]
    return m


def with_part_path(path):
    parts = [(path, b"x"), *PARTS[1:]]
    return manifest_for(parts, payload=pack_payload(parts))


@pytest.mark.parametrize("manifest_bytes, says", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"format": 1, "format": 1}', "twice"),
    (encode(without("security_version")), "lacks security_version"),
    (encode(without("parts")), "lacks parts"),
    (encode(manifest_for(PARTS, version="1.2")), "version '1.2'"),
    (encode(manifest_for(PARTS, version="0.2.0-rc1")), "version"),
    (encode(manifest_for(PARTS, min_base="1.24")), "min_base"),
    (encode(manifest_for(PARTS, security_version=-1)), "security_version -1"),
    (encode(manifest_for(PARTS, security_version="2")), "security_version '2'"),
    (encode(manifest_for(PARTS, security_version=70000)), "security_version 70000"),
    (encode(manifest_for(PARTS, security_version=True)), "security_version True"),
    (encode(manifest_for(PARTS, format=2)), "format 2"),
    (encode(manifest_for(PARTS, product="other-edge")), "product"),
    (encode(manifest_for(PARTS, boards=[])), "boards"),
    (encode(manifest_for(PARTS, boards=["Virtual"])), "board 'Virtual'"),
    (encode(manifest_for(PARTS, created="yesterday")), "created"),
    (encode({**manifest_for(PARTS), "notes": "x"}), "notes"),
    (encode(with_part_path("../boot.mpy")), "'..'"),
    (encode(with_part_path("/app.mpy")), "absolute"),
    (encode(with_part_path("board//x.mpy")), "empty"),
    (encode(with_part_path("app.py")), ".mpy"),
    (encode(manifest_for(PARTS[::-1], payload=pack_payload(PARTS[::-1]))), "sorted"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_manifest_of_the_wrong_shape_is_refused(manifest_bytes, says, key):
    e = refused(craft(key, manifest_bytes=manifest_bytes), key)  # signed: the shape alone is at fault
    assert e.reason == "bad-manifest"
    assert says in e.detail


def test_the_most_basic_fault_is_named_first(key, other_key):
    # a field missing and signed with another key: the manifest is named, not the signature
    assert refused(craft(other_key, manifest=without("boards")), key).reason == "bad-manifest"
    # a bad signature and a bad payload: the signature is named, not the hash
    bad_payload = bytearray(pack_payload(PARTS))
    bad_payload[-1] ^= 1
    assert refused(craft(other_key, payload=bytes(bad_payload)), key).reason == "bad-signature"


# -- bad-signature --------------------------------------------------------------------------------


def test_a_bundle_signed_with_another_key_is_refused(key, other_key):
    e = refused(craft(other_key), key)
    assert e.reason == "bad-signature"
    assert fingerprint(key.public_key())[:16] in e.detail  # names the key it trusts


@pytest.mark.parametrize("damage", ["flip", "upper", "no-newline", "short", "binary"])
def test_a_damaged_signature_is_refused(damage, key):
    mb = encode(manifest_for(PARTS))
    s = sig(mb, key)
    if damage == "flip":
        s = s[:10] + (b"0" if s[10:11] != b"0" else b"1") + s[11:]
    elif damage == "upper":
        s = s.upper()
    elif damage == "no-newline":
        s = s[:-1]
    elif damage == "short":
        s = s[:64] + b"\n"
    else:
        s = key.sign(mb)
    assert refused(craft(key, manifest_bytes=mb, signature=s), key).reason == "bad-signature"


def test_a_manifest_changed_after_signing_is_refused(key):
    good = dict(untar(craft(key)))
    m = json.loads(good["manifest.json"])
    m["security_version"] = 3  # still a valid manifest, but not the one that was signed
    data = craft(key, manifest_bytes=encode(m), signature=good["manifest.sig"])
    assert refused(data, key).reason == "bad-signature"
    # even a change that means the same JSON: the signature is over the bytes
    spaced = json.dumps(json.loads(good["manifest.json"]), sort_keys=True).encode()
    assert refused(craft(key, manifest_bytes=spaced, signature=good["manifest.sig"]), key).reason == "bad-signature"


# -- bad-hash -------------------------------------------------------------------------------------


def test_a_flipped_payload_byte_is_refused(key):
    payload = bytearray(pack_payload(PARTS))
    payload[100] ^= 0x40
    e = refused(craft(key, payload=bytes(payload)), key)  # the manifest of the good payload, signed
    assert e.reason == "bad-hash" and "SHA-256" in e.detail


def test_a_payload_of_another_length_is_refused(key):
    e = refused(craft(key, payload=pack_payload(PARTS) + b"\x00"), key)
    assert e.reason == "bad-hash"


def test_parts_in_another_order_than_the_manifest_are_refused(key):
    # the payload's own size and sha256 are right, and signed: only the order of its parts is wrong
    shuffled = pack_payload(PARTS[::-1])
    m = manifest_for(PARTS, payload=shuffled)
    e = refused(craft(key, manifest=m, payload=shuffled), key)
    assert e.reason == "bad-hash" and "part 1" in e.detail


def test_a_part_that_differs_from_its_manifest_entry_is_refused(key):
    changed = [PARTS[0], ("board/esp32.mpy", b"M\x06other"), PARTS[2]]
    payload = pack_payload(changed)
    m = manifest_for(PARTS, payload=payload)  # the payload's hash is signed, the part's is the old one
    e = refused(craft(key, manifest=m, payload=payload), key)
    assert e.reason == "bad-hash" and "board/esp32.mpy" in e.detail


def test_a_truncated_payload_record_is_refused(key):
    cut = pack_payload(PARTS)[:-5]
    m = manifest_for(PARTS, payload=cut)  # signed as it is: still refused
    e = refused(craft(key, manifest=m, payload=cut), key)
    assert e.reason == "bad-hash" and "does not split" in e.detail


# -- the payload's records ------------------------------------------------------------------------


def test_payload_records_round_trip():
    data = pack_payload(PARTS)
    assert data[:1] == b"\x07" and data[1:8] == b"app.mpy" and data[8:12] == len(PARTS[0][1]).to_bytes(4, "big")
    assert unpack_payload(data) == PARTS
    assert unpack_payload(b"") == []


@pytest.mark.parametrize("data", [
    pack_payload(PARTS)[:-1],            # the last part's bytes cut short
    pack_payload(PARTS)[:3],             # inside a name
    pack_payload(PARTS) + b"\x01",       # trailing byte
    b"\x00" + b"\x00\x00\x00\x00",       # empty name
    b"\x41" + b"a" * 65 + b"\x00" * 4,   # name of 65 bytes
    b"\x02\xff\xfe" + b"\x00" * 4,       # name not UTF-8
], ids=["truncated", "in-a-name", "trailing", "empty-name", "long-name", "not-utf8"])
def test_bad_payload_records_are_refused(data):
    with pytest.raises(BundleError) as e:
        unpack_payload(data)
    assert e.value.reason == "bad-payload"


# -- keys -----------------------------------------------------------------------------------------


def test_keys_load_from_pem_and_another_type_is_refused(tmp_path, key):
    priv, pub = tmp_path / "release.key", tmp_path / "release.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    assert fingerprint(load_private_key(priv).public_key()) == fingerprint(load_public_key(pub))

    r = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_priv, rsa_pub = tmp_path / "rsa.key", tmp_path / "rsa.pub"
    rsa_priv.write_bytes(r.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    rsa_pub.write_bytes(r.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    for load, path in ((load_private_key, rsa_priv), (load_public_key, rsa_pub),
                       (load_private_key, tmp_path / "missing.key"), (load_public_key, priv),
                       (load_public_key, tmp_path / "rsa.key"), (load_private_key, pub)):
        with pytest.raises(BundleError) as e:
            load(path)
        assert e.value.reason == "bad-key" and str(path) in e.value.detail, (load.__name__, path)
    with pytest.raises(BundleError) as e:
        load_private_key(rsa_priv)
    assert "RSA" in e.value.detail


def test_a_key_path_that_cannot_be_read_is_a_bad_key(tmp_path):
    for path in (tmp_path, tmp_path / "nowhere" / "release.key"):  # a directory, a missing folder
        with pytest.raises(BundleError) as e:
            load_private_key(path)
        assert e.value.reason == "bad-key" and str(path) in e.value.detail


# -- versions -------------------------------------------------------------------------------------


def test_versions_compare_as_numbers():
    assert compare_versions("0.10.0", "0.9.9") == 1
    assert compare_versions("0.9.9", "0.10.0") == -1
    assert compare_versions("1.2.3", "1.2.3") == 0
    assert compare_versions("2.0.0", "1.99.99") == 1
    with pytest.raises(ValueError):
        compare_versions("1.2", "1.2.0")

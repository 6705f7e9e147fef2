"""Release bundles (.bcb): one signed firmware update, as the release tool writes it and the bridge checks it.

A bundle is an uncompressed POSIX tar of exactly three regular files, in this order:

  manifest.json  UTF-8 JSON, compact, sorted keys: format, product, version, security_version, min_base,
                 boards, created, payload {size, sha256}, parts [{path, size, sha256}, ...]
  manifest.sig   the Ed25519 signature of the bytes of manifest.json: 128 lower-case hex digits, "\\n"
  payload.bin    what a device downloads: per part, in manifest order, the name's length (1 byte), the
                 name, the size (4 bytes, big-endian) and the part's bytes

Only the manifest is signed; it names the SHA-256 of the payload and of each part, so the signature
covers every byte a device runs. read_bundle names the most basic failure first: not-a-bundle, then
bad-manifest (its shape only), bad-signature, bad-hash. What the manifest says about the payload is
believed only once the signature holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1
PRODUCT = "baochay-edge"
SUFFIX = ".bcb"
MANIFEST, SIGNATURE, PAYLOAD = "manifest.json", "manifest.sig", "payload.bin"
MEMBERS = (MANIFEST, SIGNATURE, PAYLOAD)
MAX_BYTES = 4 * 1024 * 1024  # a whole bundle, and so any member of it
MAX_SECURITY_VERSION = 65535
NAME_MAX = 64  # a part's path: its length is one byte in payload.bin, and devices keep paths short
FIELDS = ("format", "product", "version", "security_version", "min_base", "boards", "created", "payload",
          "parts")
REASONS = ("not-a-bundle", "bad-manifest", "bad-signature", "bad-hash")

# [0-9], not \d: \d also matches the digits of other scripts, which no device parses
_VERSION = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}")
_BOARD = re.compile(r"[a-z0-9-]{1,32}")
_PATH = re.compile(rf"[a-z0-9_./-]{{1,{NAME_MAX}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIG = re.compile(rb"[0-9a-f]{128}\n")
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class BundleError(Exception):
    """A bundle, payload or key refused: `reason` is a short word, `detail` a sentence for the operator."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Bundle:
    """A bundle that passed every check of read_bundle."""

    manifest: dict[str, Any]
    manifest_bytes: bytes
    payload: bytes
    sha256: str  # of the payload: what a device checks its download against

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def security_version(self) -> int:
        return self.manifest["security_version"]

    @property
    def boards(self) -> list[str]:
        return list(self.manifest["boards"])

    @property
    def min_base(self) -> str:
        return self.manifest["min_base"]

    @property
    def created(self) -> str:
        return self.manifest["created"]

    @property
    def size(self) -> int:
        return len(self.payload)

    @property
    def parts(self) -> list[tuple[str, bytes]]:
        return unpack_payload(self.payload)


# -- versions -------------------------------------------------------------------------------------


def is_version(text: object) -> bool:
    """MAJOR.MINOR.PATCH, each 1-4 ASCII digits."""
    return isinstance(text, str) and _VERSION.fullmatch(text) is not None


def _version_tuple(text: str) -> tuple[int, ...]:
    if not is_version(text):
        raise ValueError(f"{text!r} is not a version MAJOR.MINOR.PATCH")
    return tuple(int(x) for x in text.split("."))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, the same as or newer than b; numbers, not text ("0.10.0" > "0.9.9")."""
    x, y = _version_tuple(a), _version_tuple(b)
    return (x > y) - (x < y)


# -- the payload ----------------------------------------------------------------------------------


def pack_payload(parts: list[tuple[str, bytes]]) -> bytes:
    """payload.bin of `parts`, in the order given."""
    out = bytearray()
    for name, data in parts:
        raw = name.encode("utf-8")
        if not 0 < len(raw) <= NAME_MAX:
            raise BundleError("bad-payload", f"part name {name!r} is not 1..{NAME_MAX} bytes")
        if len(data) >= 1 << 32:
            raise BundleError("bad-payload", f"part {name} is too large for a 4-byte size")
        out += bytes((len(raw),)) + raw + len(data).to_bytes(4, "big") + data
    return bytes(out)


def unpack_payload(data: bytes) -> list[tuple[str, bytes]]:
    """The (name, bytes) records of payload.bin; BundleError("bad-payload") unless they fill it exactly."""
    view = memoryview(data)
    parts = []
    pos = 0
    while pos < len(view):
        start = pos
        n = view[pos]
        if not 0 < n <= NAME_MAX:
            raise BundleError("bad-payload", f"the record at byte {start} has a name length of {n} (1..{NAME_MAX})")
        pos += 1
        if pos + n + 4 > len(view):
            raise BundleError("bad-payload", f"the record at byte {start} is cut short")
        try:
            name = bytes(view[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError("bad-payload", f"the record at byte {start} has a name that is not UTF-8") from None
        pos += n
        size = int.from_bytes(view[pos:pos + 4], "big")
        pos += 4
        if pos + size > len(view):
            raise BundleError("bad-payload", f"part {name} (record at byte {start}) says {size} bytes; "
                                             f"{len(view) - pos} are left")
        parts.append((name, bytes(view[pos:pos + size])))
        pos += size
    return parts


def describe_parts(parts: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The manifest's `parts` entries for these parts, in their order."""
    return [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in parts]


# -- the manifest ---------------------------------------------------------------------------------


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """The bytes that are signed: compact JSON with sorted keys, UTF-8."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _is_int(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_sha256(v: object) -> bool:
    return isinstance(v, str) and _SHA256.fullmatch(v) is not None


def _exact_keys(where: str, v: object, keys: tuple[str, ...]) -> str | None:
    if not isinstance(v, dict):
        return f"{where} must be an object with {', '.join(keys)}"
    if set(v) != set(keys):
        return f"{where} must have exactly {', '.join(keys)}, has {', '.join(sorted(v)) or 'nothing'}"
    return None


def path_problem(path: object) -> str | None:
    """Why `path` cannot be a part's path, or None: relative, no '..', no empty or '.' segment, .mpy."""
    if not isinstance(path, str):
        return f"part path {path!r} is not a text"
    if not _PATH.fullmatch(path):
        return f"part path {path!r} is not 1..{NAME_MAX} characters of a-z 0-9 _ - . /"
    if path.startswith("/"):
        return f"part path {path!r} is absolute"
    if ".." in path:
        return f"part path {path!r} contains '..'"
    segments = path.split("/")
    if any(s in ("", ".") for s in segments):
        return f"part path {path!r} has an empty or '.' segment"
    if not path.endswith(".mpy") or segments[-1] == ".mpy":
        return f"part path {path!r} is not a .mpy module"
    return None


def manifest_problem(m: object) -> str | None:
    """What is wrong with the manifest's shape, or None. Says nothing of whether it is true."""
    if not isinstance(m, dict):
        return "manifest.json is not a JSON object"
    if "format" in m and not _is_int(m["format"], FORMAT, FORMAT):
        return f"format {m['format']!r}: this bridge reads format {FORMAT} bundles"
    missing = [k for k in FIELDS if k not in m]
    if missing:
        return f"manifest.json lacks {', '.join(missing)}"
    extra = sorted(k for k in m if k not in FIELDS)
    if extra:
        return f"manifest.json has fields format {FORMAT} does not: {', '.join(extra)}"
    if m["product"] != PRODUCT:
        return f"product {m['product']!r} is not {PRODUCT!r}"
    for key in ("version", "min_base"):
        if not is_version(m[key]):
            return f"{key} {m[key]!r} is not MAJOR.MINOR.PATCH (1-4 digits each)"
    if not _is_int(m["security_version"], 0, MAX_SECURITY_VERSION):
        return f"security_version {m['security_version']!r} is not a whole number 0..{MAX_SECURITY_VERSION}"
    boards = m["boards"]
    if not isinstance(boards, list) or not boards:
        return "boards must be a non-empty list of board names"
    for b in boards:
        if not isinstance(b, str) or not _BOARD.fullmatch(b):
            return f"board {b!r} is not 1-32 characters of a-z 0-9 -"
    if len(set(boards)) != len(boards):
        return "boards names a board twice"
    created = m["created"]
    if not isinstance(created, str) or not _CREATED.fullmatch(created) or not _valid_time(created):
        return f"created {created!r} is not a UTC time YYYY-MM-DDTHH:MM:SSZ"
    problem = _exact_keys("payload", m["payload"], ("size", "sha256"))
    if problem:
        return problem
    if not _is_int(m["payload"]["size"], 0, MAX_BYTES) or not _is_sha256(m["payload"]["sha256"]):
        return "payload must give size (0..4 MiB) and sha256 (64 lower-case hex digits)"
    parts = m["parts"]
    if not isinstance(parts, list) or not parts:
        return "parts must be a non-empty list"
    for i, p in enumerate(parts):
        problem = _exact_keys(f"parts[{i}]", p, ("path", "size", "sha256")) or path_problem(p["path"])
        if problem:
            return problem
        if not _is_int(p["size"], 0, MAX_BYTES) or not _is_sha256(p["sha256"]):
            return f"part {p['path']} must give size (0..4 MiB) and sha256 (64 lower-case hex digits)"
    paths = [p["path"] for p in parts]
    if len(set(paths)) != len(paths):
        return "parts names a path twice"
    if paths != sorted(paths):
        return "parts are not sorted by path"
    return None


def _valid_time(text: str) -> bool:
    try:
        datetime.strptime(text, CREATED_FORMAT)
    except ValueError:
        return False
    return True


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # readers disagree on which of two equal keys wins; a signed manifest must mean one thing
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_manifest(data: bytes) -> dict[str, Any]:
    """manifest.json's bytes as a dict of the right shape; BundleError("bad-manifest") otherwise."""
    try:
        m = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                       parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BundleError("bad-manifest", "manifest.json is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise BundleError("bad-manifest", f"manifest.json is not JSON ({e})") from None
    problem = manifest_problem(m)
    if problem:
        raise BundleError("bad-manifest", problem)
    return m


# -- keys -----------------------------------------------------------------------------------------


def _read_key_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise BundleError("bad-key", f"cannot read the key file {path}: {e.strerror}") from None


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS8) file; BundleError("bad-key") for anything else."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BundleError("bad-key", f"{path} is encrypted; a release key is kept unencrypted, offline") from None
    except (ValueError, UnsupportedAlgorithm):
        raise BundleError("bad-key", f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError("bad-key", f"{path}: the key in it is {_kind(key)}, not Ed25519 (a release key)")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo) file; BundleError("bad-key") otherwise."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        # the bridge is given release.pub; release.key stays with whoever signs releases
        raise BundleError("bad-key", f"{path} is a private key; give the public key (release.pub) instead")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise BundleError("bad-key", f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("bad-key", f"{path}: the key in it is {_kind(key)}, not Ed25519 (a release key)")
    return key


def _kind(key: object) -> str:
    name = type(key).__name__.removeprefix("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return name or "of an unknown type"


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32 public bytes, hex: how operators tell release keys apart."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signature_text(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """manifest.sig for these manifest bytes."""
    return private_key.sign(manifest_bytes).hex().encode("ascii") + b"\n"


# -- writing --------------------------------------------------------------------------------------


def tar_members(members: list[tuple[str, bytes]]) -> bytes:
    """A POSIX (ustar) tar of regular files; mtime, owner and mode fixed, so the same files give the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def complete_manifest(manifest: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """The manifest with payload and parts filled from the payload; ones it already has must agree."""
    filled = {"payload": {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
              "parts": describe_parts(unpack_payload(payload))}
    for key, value in filled.items():
        if key in manifest and manifest[key] != value:
            raise BundleError("bad-hash", f"the manifest's {key} does not describe the payload given")
    return {**manifest, **filled}


def bundle_bytes(manifest: dict[str, Any], payload: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """A signed bundle; refused with the reason read_bundle would give, so none is made that it refuses."""
    m = complete_manifest(manifest, payload)
    problem = manifest_problem(m)
    if problem:
        raise BundleError("bad-manifest", problem)
    mb = encode_manifest(m)
    data = tar_members([(MANIFEST, mb), (SIGNATURE, signature_text(mb, private_key)), (PAYLOAD, payload)])
    if len(data) > MAX_BYTES:
        raise BundleError("not-a-bundle", f"the bundle would be {len(data):,} bytes, over the "
                                          f"{MAX_BYTES:,} a bundle may be")
    return data


def write_bundle(path: str | os.PathLike[str], manifest: dict[str, Any], payload: bytes,
                 private_key: Ed25519PrivateKey) -> None:
    """Sign and write a bundle (payload and parts of the manifest come from the payload). Written under
    a temporary name and renamed, so a reader never sees half a bundle."""
    data = bundle_bytes(manifest, payload, private_key)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- reading --------------------------------------------------------------------------------------


def _read_limited(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > MAX_BYTES:
            raise BundleError("not-a-bundle", f"{len(data):,} bytes, over the {MAX_BYTES:,} a bundle may be")
        return data
    path = Path(source)
    try:
        st = path.stat()
        # the size is known before a byte is read: a huge file is never loaded
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("not-a-bundle", f"{path} is not a regular file")
        if st.st_size > MAX_BYTES:
            raise BundleError("not-a-bundle", f"{path} is {st.st_size:,} bytes, over the {MAX_BYTES:,} "
                                              f"a bundle may be")
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise BundleError("not-a-bundle", f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise BundleError("not-a-bundle", f"{path} grew past {MAX_BYTES:,} bytes while it was read")
    return data


def _members(data: bytes) -> tuple[bytes, bytes, bytes]:
    expected = f"a bundle holds {', '.join(MEMBERS)}, in that order"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            infos = tf.getmembers()
            for info in infos:
                if not info.isreg():
                    raise BundleError("not-a-bundle", f"member {info.name} is not a regular file")
                if info.size > MAX_BYTES:
                    raise BundleError("not-a-bundle", f"member {info.name} is over {MAX_BYTES:,} bytes")
            names = [info.name for info in infos]
            if names != list(MEMBERS):
                raise BundleError("not-a-bundle", f"it holds {', '.join(names) or 'nothing'}; {expected}")
            out = []
            for info in infos:
                f = tf.extractfile(info)
                if f is None:
                    raise BundleError("not-a-bundle", f"member {info.name} cannot be read")
                out.append(f.read())
    except (tarfile.TarError, EOFError, ValueError, OSError) as e:
        raise BundleError("not-a-bundle", f"not an uncompressed tar file ({e})") from None
    return out[0], out[1], out[2]


def _check_signature(manifest_bytes: bytes, sig: bytes, public_key: Ed25519PublicKey) -> None:
    if not _SIG.fullmatch(sig):
        raise BundleError("bad-signature", f"{SIGNATURE} is not 128 lower-case hex digits and a newline")
    try:
        public_key.verify(bytes.fromhex(sig[:128].decode("ascii")), manifest_bytes)
    except InvalidSignature:
        raise BundleError("bad-signature", f"{MANIFEST} is not signed by the release key "
                                           f"{fingerprint(public_key)[:16]}") from None


def _check_payload(m: dict[str, Any], payload: bytes) -> str:
    want = m["payload"]
    if len(payload) != want["size"]:
        raise BundleError("bad-hash", f"{PAYLOAD} is {len(payload):,} bytes; the manifest says {want['size']:,}")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != want["sha256"]:
        raise BundleError("bad-hash", f"{PAYLOAD}'s SHA-256 is {digest}; the manifest says {want['sha256']}")
    try:
        got = describe_parts(unpack_payload(payload))
    except BundleError as e:
        raise BundleError("bad-hash", f"{PAYLOAD} does not split into the manifest's parts: {e.detail}") from None
    listed = m["parts"]
    if len(got) != len(listed):
        raise BundleError("bad-hash", f"{PAYLOAD} holds {len(got)} parts; the manifest lists {len(listed)}")
    for i, (g, w) in enumerate(zip(got, listed, strict=True)):
        if g["path"] != w["path"]:
            raise BundleError("bad-hash", f"part {i + 1} of {PAYLOAD} is {g['path']}; the manifest's is {w['path']}")
        if g != w:
            raise BundleError("bad-hash", f"part {w['path']} in {PAYLOAD} differs from the manifest's size or SHA-256")
    return digest


def read_bundle(source: str | os.PathLike[str] | bytes | bytearray | memoryview,
                public_key: Ed25519PublicKey) -> Bundle:
    """A bundle from a file or its bytes, checked in full against the release key; BundleError otherwise,
    with the most basic of its failures (see the module's docstring)."""
    manifest_bytes, sig, payload = _members(_read_limited(source))
    manifest = parse_manifest(manifest_bytes)
    _check_signature(manifest_bytes, sig, public_key)
    digest = _check_payload(manifest, payload)
    return Bundle(manifest=manifest, manifest_bytes=manifest_bytes, payload=payload, sha256=digest)

"""Release keys and signed firmware bundles for over-the-air updates (`baochay-provision release`).

The bundle format and its checks are the bridge's (bridge/ota/bundle.py): what is built here is read
back with the same code the bridge trusts, before the build counts as done.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridge.ota.bundle import (
    CREATED_FORMAT,
    FORMAT,
    MAX_SECURITY_VERSION,
    PRODUCT,
    SUFFIX,
    Bundle,
    BundleError,
    fingerprint,
    is_version,
    load_private_key,
    load_public_key,
    pack_payload,
    read_bundle,
    write_bundle,
)

from .boards import BOARDS_YAML, get_board, load_boards
from .errors import ProvisionError
from .image import FIRMWARE_DIR, KEEP_SOURCE, compile_mpy, firmware_sources
from .progress import Progress

KEY_NAME = "release.key"
PUB_NAME = "release.pub"
DEFAULT_RELEASE_DIR = Path("build") / "release"
# The oldest MicroPython the firmware runs on: the emulated ESP32's stock 1.24 (docs/hil.md).
DEFAULT_MIN_BASE = "1.24.0"
# The base firmware that stays on the device through every update: the entry points and the boot
# selector that chooses between the base and an update's slot (firmware/slots.py).
BASE_MODULES = (*KEEP_SOURCE, "slots.py")
VERSION_MODULE = "app.py"  # its App.FW_VERSION is the application's version; a bundle's says the release's
VERSION_LINE = re.compile(r'^(\s*FW_VERSION = )"[^"\n]*"([ \t]*#[^\n]*)?$', re.M)
_ORPHAN = ("{} exists; a new release key would orphan every device's trust in bundles signed with the old one; "
           "remove it first if you mean it (or give --force)")


# -- keygen ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    key: Path
    pub: Path
    fingerprint: str


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (never an existing one) with `mode` from its first byte: a private key is not
    readable by others even for an instant."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken more than it should; the mode is exact
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def _write_replacing(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    _write_new(tmp, data, mode)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def keygen(out_dir: Path, force: bool = False) -> KeyPair:
    """A new Ed25519 release key: out_dir/release.key (0600) and out_dir/release.pub (0644)."""
    out_dir = Path(out_dir)
    key_path, pub_path = out_dir / KEY_NAME, out_dir / PUB_NAME
    if not force:
        for p in (key_path, pub_path):  # a lone release.pub may belong to a key kept elsewhere
            if p.exists():
                raise ProvisionError(_ORPHAN.format(p))
    private = Ed25519PrivateKey.generate()
    key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    pub_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if force:
            _write_replacing(key_path, key_pem, 0o600)
        else:
            _write_new(key_path, key_pem, 0o600)
        _write_replacing(pub_path, pub_pem, 0o644)
    except FileExistsError:
        raise ProvisionError(_ORPHAN.format(key_path)) from None
    except OSError as e:
        raise ProvisionError(f"cannot write the release key into {out_dir}: {e.strerror}") from None
    return KeyPair(key=key_path, pub=pub_path, fingerprint=fingerprint(private.public_key()))


# -- build ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    path: Path
    bundle: Bundle
    key_fingerprint: str


def check_version(text: str, what: str = "version") -> str:
    if not is_version(text):
        raise ProvisionError(f"{what} {text!r} is not MAJOR.MINOR.PATCH (digits only, e.g. 0.2.0)")
    return text


def check_security_version(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SECURITY_VERSION:
        raise ProvisionError(f"security version {value!r} is not a whole number 0..{MAX_SECURITY_VERSION}")
    return value


def select_boards(names: list[str] | None, boards_file: Path = BOARDS_YAML) -> tuple[list[str], bool]:
    """The bundle's boards, sorted, and whether they are chips (else virtual boards). None: every chip
    board of boards.yaml. One bundle never mixes the two: a chip's payload leaves the host-only modules out."""
    if names is None:
        chips = [name for name, b in load_boards(boards_file).items() if not b.is_virtual]
        if not chips:
            raise ProvisionError(f"{boards_file} has no chip boards; name the boards with --boards")
        return sorted(chips), True
    boards = [get_board(name, boards_file) for name in names]
    virtual = sorted({b.name for b in boards if b.is_virtual})
    chips = sorted({b.name for b in boards if not b.is_virtual})
    if virtual and chips:
        raise ProvisionError(f"one bundle is for virtual boards or for chips, not both: virtual boards "
                             f"{', '.join(virtual)}; chip boards {', '.join(chips)}. Build one bundle for each.")
    return virtual or chips, not virtual


def created_stamp() -> str:
    """UTC now, or SOURCE_DATE_EPOCH when set: the same sources then give the same bundle."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not raw:
        return datetime.now(timezone.utc).strftime(CREATED_FORMAT)
    try:
        if not (raw.isascii() and raw.isdigit()):
            raise ValueError
        t = datetime.fromtimestamp(int(raw), timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise ProvisionError(f"SOURCE_DATE_EPOCH {raw!r} is not a time in whole seconds since 1970") from None
    if t.year > 9999:
        raise ProvisionError(f"SOURCE_DATE_EPOCH {raw!r} is after the year 9999")
    return t.strftime(CREATED_FORMAT)


def _release_source(src: Path, version: str) -> str:
    """app.py with the release's version on its one FW_VERSION line (a module of its own would cost
    every device heap: docs/ota.md)."""
    try:
        text = src.read_text(encoding="utf-8")
    except OSError as e:
        raise ProvisionError(f"cannot read {src}: {e.strerror}") from None
    out, n = VERSION_LINE.subn(lambda m: f'{m.group(1)}"{version}"{m.group(2) or ""}', text)
    if n != 1:
        raise ProvisionError(f"{src} must hold exactly one line `FW_VERSION = \"X.Y.Z\"` (found {n}); "
                             "a bundle sets the version there")
    return out


def payload_parts(version: str, chip: bool, firmware_dir: Path = FIRMWARE_DIR,
                  show_progress: bool = False) -> list[tuple[str, bytes]]:
    """(path as imported, .mpy) of every firmware module but the base's, sorted; app.py's FW_VERSION says `version`.
    chip: without the host-only modules, as in a chip's image."""
    firmware_dir = Path(firmware_dir)
    sources = [s for s in firmware_sources(firmware_dir, chip)
               if s.relative_to(firmware_dir).as_posix() not in BASE_MODULES]
    version_src = firmware_dir / VERSION_MODULE
    if version_src not in sources:
        raise ProvisionError(f"{version_src} is missing: it holds the application's FW_VERSION, which a bundle sets")
    release_text = _release_source(version_src, version)
    progress = Progress("compile", len(sources)) if show_progress else None
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        release_version = Path(tmp) / VERSION_MODULE
        release_version.write_text(release_text, encoding="utf-8")
        for i, src in enumerate(sources):
            rel = src.relative_to(firmware_dir).as_posix()
            data = compile_mpy(release_version if rel == VERSION_MODULE else src, rel)
            parts.append((rel[:-3] + ".mpy", data))
            if progress:
                progress.update(i + 1)
    if progress:
        progress.done()
    return sorted(parts)


def _load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_private_key(path)
    except BundleError as e:
        raise ProvisionError(e.detail) from None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        print(f"warning: {path} can be read by others (mode {stat.S_IMODE(path.stat().st_mode):04o}): "
              f"chmod 600 {path}, and keep it offline", file=sys.stderr)
    return key


def build_release(key: Path, version: str, security_version: int, boards: list[str] | None = None,
                  min_base: str = DEFAULT_MIN_BASE, out_dir: Path = DEFAULT_RELEASE_DIR,
                  boards_file: Path = BOARDS_YAML, firmware_dir: Path = FIRMWARE_DIR,
                  show_progress: bool = False) -> Release:
    """out_dir/baochay-<version>.bcb, signed with `key` and read back as the bridge reads it; a bundle
    that does not verify is removed."""
    check_version(version)
    check_version(min_base, "min-base")
    check_security_version(security_version)
    key = Path(key)
    private = _load_signing_key(key)
    names, chip = select_boards(boards, boards_file)
    created = created_stamp()
    parts = payload_parts(version, chip, firmware_dir, show_progress)
    manifest = {"format": FORMAT, "product": PRODUCT, "version": version, "security_version": security_version,
                "min_base": min_base, "boards": names, "created": created}
    out_dir = Path(out_dir)
    path = out_dir / f"baochay-{version}{SUFFIX}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_bundle(path, manifest, pack_payload(parts), private)
    except BundleError as e:
        raise ProvisionError(f"cannot make the bundle: {e.detail}") from None
    except OSError as e:
        raise ProvisionError(f"cannot write {path}: {e.strerror}") from None
    public = private.public_key()
    try:
        bundle = read_bundle(path, public)
    except BundleError as e:
        path.unlink(missing_ok=True)
        raise ProvisionError(f"the bundle just written does not verify ({e.reason}: {e.detail}); "
                             f"{path} removed") from None
    return Release(path=path, bundle=bundle, key_fingerprint=fingerprint(public))


# -- verify ---------------------------------------------------------------------------------------


def verify_release(path: Path, pub: Path) -> Release:
    """The bundle at `path`, checked as the bridge checks it; ProvisionError says why it is refused."""
    try:
        public: Ed25519PublicKey = load_public_key(pub)
    except BundleError as e:
        raise ProvisionError(e.detail) from None
    try:
        bundle = read_bundle(path, public)
    except BundleError as e:
        raise ProvisionError(f"bundle refused: {e.reason}: {e.detail}") from None
    return Release(path=Path(path), bundle=bundle, key_fingerprint=fingerprint(public))


def summary(r: Release) -> list[str]:
    b = r.bundle
    return [
        f"bundle            {r.path}",
        f"version           {b.version}",
        f"security version  {b.security_version}",
        f"boards            {', '.join(b.boards)}",
        f"needs MicroPython {b.min_base} or later",
        f"created           {b.created}",
        f"parts             {len(b.manifest['parts'])}",
        f"payload           {b.size:,} bytes",
        f"payload sha256    {b.sha256}",
        f"release key       {r.key_fingerprint}",
    ]

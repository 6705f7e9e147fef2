"""Mosquitto 2.0 password files, written by our own code so no password is ever on a command line
(`mosquitto_passwd -b FILE USER PASSWORD` puts it in every process listing).

The format, as Mosquitto 2.0's own `mosquitto_passwd` writes it (checked against it in the tests):
one `user:$7$<iterations>$<base64 salt>$<base64 hash>` line per user, PBKDF2-HMAC-SHA512 with 101
iterations, a 12-byte random salt and a 64-byte hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

ITERATIONS = 101
SALT_BYTES = 12


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(line_hash: str, password: str) -> bool:
    """Does `password` match a `$7$` hash from a password file?"""
    try:
        _, alg, it, salt, digest = line_hash.split("$")
        if alg != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(it))
        return secrets.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def read_users(path: Path) -> dict[str, str]:
    """user -> hash, in file order; {} when the file does not exist."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#") and ":" in line:
            user, h = line.split(":", 1)
            out[user] = h.strip()
    return out


def write_users(path: Path, users: dict[str, str]) -> None:
    """Replace the file with `users` (user -> hash), atomically, keeping its mode (0600 when new) and,
    as root, its owner (the broker's user must read it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = 0o600, None
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{u}:{h}\n" for u, h in users.items()))
    os.chmod(tmp, mode)
    if owner is not None and os.geteuid() == 0:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """A new password file holding `users` (name -> password)."""
    write_users(path, {u: hash_password(p) for u, p in users.items()})

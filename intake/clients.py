"""Who may call the intake: its clients and their bearer tokens, read from a tokens file.

    # client_id  token
    bridge-hn    Zq3v...(16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -)

One client a line, `#` starts a comment. The file must be readable by its owner only (like an SSH
key): a token in a file others can read is everyone's. Anything wrong with the file is one error
line naming the file and the line, and never the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat

CLIENT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")  # RFC 6750's token characters, at least 16
# Incidents stored before the intake knew clients belong to this one: an intake upgraded from a single
# shared token keeps serving them to whoever holds `default`'s token.
DEFAULT_CLIENT = "default"


class TokensError(ValueError):
    """The tokens file cannot be used; the message is one line."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Clients:
    def __init__(self, tokens: dict[str, str]) -> None:
        if not tokens:
            raise TokensError("no clients configured")
        # Digests, so every comparison is of 32 bytes whatever the length of what was sent.
        self._digests = [(client, _digest(token)) for client, token in tokens.items()]

    @property
    def ids(self) -> list[str]:
        return [client for client, _ in self._digests]

    def who(self, token: str) -> str | None:
        """The client holding `token`, else None. Every token is compared, in constant time each, so
        the time taken says neither which client matched nor how much of a guess was right."""
        given = _digest(token)
        found = None
        for client, digest in self._digests:
            if hmac.compare_digest(given, digest):
                found = client
        return found


def parse(text: str, source: str) -> dict[str, str]:
    """client id -> token from the text of a tokens file; raises TokensError naming source:line."""
    tokens: dict[str, str] = {}
    first_line: dict[str, int] = {}
    owner_of: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()  # no token holds a `#`, so this is always a comment
        if not fields:
            continue
        if len(fields) != 2:
            raise TokensError(f"{source}:{n}: want `client_id token`, found {len(fields)} fields")
        client, token = fields
        if not CLIENT_RE.match(client):
            raise TokensError(f"{source}:{n}: client id must be 1-64 of A-Z a-z 0-9 . _ -")
        if not TOKEN_RE.match(token):
            raise TokensError(f"{source}:{n}: the token of {client!r} must be 16-256 of A-Z a-z 0-9 . _ ~ + / = -")
        if client in first_line:
            raise TokensError(f"{source}:{n}: client {client!r} is listed twice (first on line {first_line[client]})")
        if token in owner_of:
            other, at = owner_of[token]
            raise TokensError(f"{source}:{n}: {client!r} has the same token as {other!r} (line {at}): "
                              "each client needs its own")
        first_line[client] = n
        owner_of[token] = (client, n)
        tokens[client] = token
    if not tokens:
        raise TokensError(f"{source}: no clients in it: want one `client_id token` line per client")
    return tokens


def load(path: str) -> Clients:
    """The clients of a tokens file; raises TokensError (one line) when it cannot be used."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise TokensError(f"{path}: not a regular file")
            if os.name == "posix" and st.st_mode & 0o077:
                raise TokensError(f"{path}: readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                                  f"chmod 600 it")
            raw = f.read()
    except OSError as e:
        raise TokensError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TokensError(f"{path}: not UTF-8 text") from None
    return Clients(parse(text, path))

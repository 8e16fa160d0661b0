"""Bearer tokens: who may call a service, checked against hashes only, re-read when the token Secret changes.

The token file (AUTH_TOKENS_FILE; in Kubernetes a key of the token Secret, mounted as a volume) holds one token per
line: a name, the token's sha256, and optionally the scopes it grants.

    # name   sha256 of the token                                              scopes (default: all)
    ci       sha256:0c3b7d2b0b5a2c9f6c2e2e1f0e9d7b4a3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f   infer,read
    grafana  sha256:6f1ed002ab5595859014ebf0951522d9c1bc3b6a7c1f8b8e5b9f9d6a2e1c4b3a   metrics

Only hashes are stored: whoever reads the Secret, a backup of it or a log learns no token. A plain sha256 is enough
because the tokens are random (`secrets.token_urlsafe(32)`: 256 bits): a slow password hash (bcrypt, scrypt,
argon2) exists to make guessing a *low-entropy* password expensive, and no guessing rate makes a dent in 2^256; it
would only add tens of milliseconds to every request. The presented token's hash is compared with every stored one
with `hmac.compare_digest` (no early exit), so the time taken tells nothing about how close a guess was.

A token's name is what the access log and the rate limits use; the token itself is never logged or shown.
Rotation with an overlap: add the new token's line, move the clients over, remove the old line. The file is
checked for changes at most once a second (a mounted Secret is updated in place by the kubelet, within about a
minute of the change); a file that no longer parses keeps the previous tokens in force and logs why.

Scopes: `infer` (POST /infer), `read` (every other route that is not open: detections, camera, snapshot, models,
events, chunks, live streams, the pages), `metrics` (/metrics, when AUTH_METRICS=true); `*` or none: all three.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCOPES = frozenset({"infer", "read", "metrics"})
_LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63})\s+sha256:(?P<hex>[0-9a-fA-F]{64})(?:\s+(?P<scopes>\S+))?$"
)
RELOAD_EVERY_S = 1.0


class TokenFileError(Exception):
    """The token file does not parse; the message names the line."""


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes  # sha256 of the token
    scopes: frozenset[str]


def token_digest(token: str | bytes) -> bytes:
    """The sha256 a token is stored as."""
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def parse_tokens(text: str, source: str = "the token file") -> list[Token]:
    """Every token line of `text`; raises TokenFileError naming the first bad line."""
    tokens: list[Token] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise TokenFileError(
                f"{source} line {number}: expected `<name> sha256:<64 hex digits> [scopes]`, e.g. "
                "`ci sha256:0c3b...9e8f infer,read` (the line is not shown: it may hold a token by mistake)"
            )
        name = match["name"]
        if name in names:
            raise TokenFileError(f"{source} line {number}: token name {name!r} is used twice")
        names.add(name)
        scopes = frozenset(s for s in (match["scopes"] or "*").split(",") if s)
        if "*" in scopes:
            scopes = SCOPES
        elif unknown := scopes - SCOPES:
            raise TokenFileError(
                f"{source} line {number}: unknown scope(s) {', '.join(sorted(unknown))}; "
                f"use {', '.join(sorted(SCOPES))} or *"
            )
        tokens.append(Token(name, bytes.fromhex(match["hex"]), scopes))
    return tokens


def check_token_file(path: Path | None) -> None:
    """At start: raise TokenFileError if `path` exists and does not parse (a missing file is allowed: the Secret
    may come later, and until then every protected route answers 401)."""
    if path is None:
        return
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path}: {exc}") from None
    parse_tokens(text, str(path))


class TokenStore:
    """The tokens of one service, from its token file, re-read when the file changes (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tokens: tuple[Token, ...] = ()
        self._version: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.error: str | None = None  # why the current file is not in force (missing, malformed), if it is not
        self._reload(initial=True)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tokens]

    def match(self, presented: str) -> Token | None:
        """The token `presented` is, or None. Every stored hash is compared, in constant time each."""
        self._maybe_reload()
        digest = token_digest(presented)
        found: Token | None = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        return found

    @property
    def empty(self) -> bool:
        self._maybe_reload()
        return not self._tokens

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_EVERY_S:
            self._checked = now
            self._reload()

    def _reload(self, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._version is not None or initial:
                self.error = f"cannot read {self.path}: {exc.strerror or exc}"
                log.error("no API tokens in force: %s; every protected route answers 401", self.error)
                self._tokens, self._version = (), None
            return
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if version == self._version:
            return
        try:
            tokens = parse_tokens(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, TokenFileError) as exc:
            if initial:
                raise TokenFileError(str(exc)) from None
            log.error("the token file changed but cannot be used, the previous tokens stay in force: %s", exc)
            self._version = version  # do not re-read it every second until it changes again
            return
        self._tokens, self._version = tuple(tokens), version
        self.error = None if tokens else f"{self.path} holds no token"
        log.info("API tokens %s: %s", "loaded" if initial else "reloaded", ", ".join(t.name for t in tokens) or "none")

"""API keys for apps and channels: made at random, kept only as their SHA-256, told apart by a hint.

The book stores a key's digest, never the key: a copy of the database (a backup, a shared
PostgreSQL) gives no working key. A key is looked up by its digest, so checking one compares
hashes inside the database's index rather than the secret byte by byte in Python.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final

from reports.errors import ReportRefused

KEY_BYTES: Final = 32  # 256 bits of randomness: 43 URL-safe characters, beyond guessing
HINT_CHARS: Final = 4  # shown in `keys list` to tell keys apart; 4 of 43 characters give
# away 24 bits, leaving 232: the key stays unguessable
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as `keys list` shows it: never the key itself."""

    name: str
    created_ns: int
    revoked_ns: int | None
    hint: str  # the key's first HINT_CHARS characters
    rate_limit_per_minute: int | None = None  # its own limit; None: reports.rate_limit_per_minute

    @property
    def active(self) -> bool:
        return self.revoked_ns is None


def new_key() -> str:
    """A fresh random key, URL-safe (it travels in a form field or a query string)."""
    return secrets.token_urlsafe(KEY_BYTES)


def digest(plain: str) -> str:
    """What the book stores and looks up: the key's SHA-256 in hex."""
    return hashlib.sha256(plain.encode("utf-8", "surrogatepass")).hexdigest()


def hint(plain: str) -> str:
    return plain[:HINT_CHARS]


def check_name(name: str) -> str:
    """The name, or ReportRefused saying what a name may hold."""
    if not NAME_PATTERN.fullmatch(name):
        raise ReportRefused(f"key name {name!r} must be 1 to 64 characters of A-Z, a-z, 0-9,"
                            " '.', '_' and '-'")
    return name

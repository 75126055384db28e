"""API key format: generation, offline parsing and hashing.

A key reads ``{prefix}_{environment}_{random}{checksum}``:

- ``random`` is 32 base62 characters from ``secrets`` (32 x log2(62) = 190 bits);
- ``checksum`` is the CRC32 of everything before it, as 6 base62 characters (GitHub's scheme), so a
  typo or a truncated copy is refused offline, without a database query, and secret scanners can
  recognise real keys.

Keys are stored as SHA-256 only. They carry 190 random bits, so a fast hash is right: a slow
password hash would add nothing but latency to every verification.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from dataclasses import dataclass
from enum import StrEnum

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_SET = frozenset(BASE62)
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH
MAX_KEY_LENGTH = 16 + 1 + 4 + 1 + BODY_LENGTH  # longest prefix, environment and body
HINT_TAIL = 4


class Environment(StrEnum):
    live = "live"
    test = "test"


class KeyFormatError(ValueError):
    """The string cannot be a key issued by this deployment."""


def base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    return "".join(reversed(chars))


def checksum(text: str) -> str:
    return base62(zlib.crc32(text.encode()), CHECKSUM_LENGTH)


def generate_key(prefix: str, environment: Environment) -> str:
    head = f"{prefix}_{environment.value}_" + "".join(
        secrets.choice(BASE62) for _ in range(RANDOM_LENGTH)
    )
    return head + checksum(head)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    environment: Environment
    hash: str


# Straight and typographic quotes, as copies from JSON, shells and documents bring them along.
QUOTES = frozenset("\"'`\u2018\u2019\u201c\u201d")


def _copy_mistake(key: str) -> str | None:
    """What went wrong when a key was copied with something around it, saying what rather than
    "wrong length" or "unknown prefix". Looks at the two ends only, whatever the key's length."""
    if not key:
        return None
    first, last = key[0], key[-1]
    if first.isspace() or last.isspace():
        return "the key has surrounding whitespace: remove the spaces or line breaks around it"
    if first in QUOTES and last in QUOTES:
        return "the key is wrapped in quotes: send it without them"
    if first in QUOTES or last in QUOTES:
        return "the key starts or ends with a quote: send it without quotes"
    return None


def parse_key(key: str, prefix: str) -> ParsedKey:
    """Check a presented key offline; raise ``KeyFormatError`` with a reason that quotes nothing."""
    mistake = _copy_mistake(key)
    if mistake is not None:
        raise KeyFormatError(mistake)
    if len(key) > MAX_KEY_LENGTH:
        raise KeyFormatError("too long")
    if any(char.isspace() for char in key):
        raise KeyFormatError("the key contains whitespace: send the key alone, in one piece")
    parts = key.split("_")
    if len(parts) != 3:
        raise KeyFormatError("expected prefix_environment_secret")
    key_prefix, environment, body = parts
    if key_prefix != prefix:
        raise KeyFormatError("unknown prefix")
    if environment not in ("live", "test"):
        raise KeyFormatError("unknown environment")
    if len(body) != BODY_LENGTH:
        raise KeyFormatError("wrong length")
    if not _BASE62_SET.issuperset(body):
        raise KeyFormatError("invalid character")
    head = key[:-CHECKSUM_LENGTH]
    # The checksum is public information (it is part of the key), so a plain comparison is fine.
    if checksum(head) != body[RANDOM_LENGTH:]:
        raise KeyFormatError("bad checksum")
    return ParsedKey(environment=Environment(environment), hash=hash_key(key))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """What can be shown after creation: ``ks_live_…a1b2``."""
    prefix, environment, body = key.split("_")
    return f"{prefix}_{environment}_…{body[-HINT_TAIL:]}"

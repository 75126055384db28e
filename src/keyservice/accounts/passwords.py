"""User passwords, hashed with Argon2id through passlib.

passlib 1.7.4's bcrypt backend breaks with bcrypt 5 (and bcrypt truncates at 72 bytes anyway), so
keyservice uses the maintained fork ``libpass`` (imported as ``passlib``) with the argon2 scheme,
backed by ``argon2-cffi``.
"""

from __future__ import annotations

from passlib.context import CryptContext

_context = CryptContext(schemes=["argon2"], deprecated="auto")

MIN_LENGTH = 12
MAX_LENGTH = 256

# Verified against when no user matches, so that a wrong email costs as much as a wrong password.
_DUMMY_HASH = _context.hash("keyservice-dummy-password")


def hash_password(password: str) -> str:
    return str(_context.hash(password))


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _context.verify(password, _DUMMY_HASH)
        return False
    return bool(_context.verify(password, password_hash))

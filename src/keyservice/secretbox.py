"""Secrets that keyservice must read back (webhook signing secrets), encrypted at rest.

A key's secret is only ever compared, so only its hash is stored; a webhook secret signs every
delivery, so it must be recoverable. It is stored as a Fernet token (AES-128-CBC with an
HMAC-SHA256, from the ``cryptography`` package) under ``KEYSERVICE_ENCRYPTION_KEY``: a copy of the
database alone reveals no secret.

Production refuses to start without the key (``config.Settings``). In development, a key is
generated into the database's directory the first time one is needed, and the log says where:
losing it makes the stored secrets unreadable, so it is kept beside the data it protects.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

logger = logging.getLogger(__name__)

DEVELOPMENT_KEY_FILE = "keyservice-encryption.key"


def is_fernet_key(value: str) -> bool:
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def new_key() -> str:
    return Fernet.generate_key().decode()


class UnreadableSecret(Exception):
    """A stored secret that the configured key cannot decrypt: the key was changed."""


class SecretBox:
    """Encrypts and decrypts short secrets with one Fernet key."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret(
                "a stored secret cannot be decrypted with KEYSERVICE_ENCRYPTION_KEY "
                "(was the key changed?)"
            ) from None


def development_key_path(database_url: str) -> Path:
    """Where development keeps its generated key: beside the SQLite file, or in the working
    directory for a database elsewhere."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[-1]
        if path and path != ":memory:":
            return Path(path).resolve().parent / DEVELOPMENT_KEY_FILE
    return Path.cwd() / DEVELOPMENT_KEY_FILE


class Keyring:
    """The deployment's ``SecretBox``, made when first needed: from the configured key, or in
    development from the generated one (made then, if there is none yet)."""

    def __init__(self, key: str | None, *, development_path: Path | None) -> None:
        self._key = key
        self._development_path = development_path
        self._box: SecretBox | None = None
        self._lock = threading.Lock()

    def box(self) -> SecretBox:
        if self._box is None:
            with self._lock:
                if self._box is None:
                    self._box = SecretBox(self._key or self._development_key())
        return self._box

    def _development_key(self) -> str:
        path = self._development_path
        if path is None:
            raise RuntimeError("no encryption key is configured (KEYSERVICE_ENCRYPTION_KEY)")
        try:
            # O_EXCL: two instances starting together agree on one key.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        key = new_key()
        with os.fdopen(descriptor, "w") as out:
            out.write(key + "\n")
        logger.warning(
            "development mode: generated an encryption key for webhook secrets into %s; keep it "
            "with the database, and set KEYSERVICE_ENCRYPTION_KEY in production",
            path,
        )
        return key

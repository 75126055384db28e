"""Standard Webhooks signatures (standardwebhooks.com), exactly.

A secret is ``whsec_`` and the base64 of 32 random bytes. A message is signed over
``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 keyed by the secret's bytes, and
sent as ``webhook-signature: v1,<base64 of the MAC>``; while an endpoint's rotated secret is
still in its grace period, one signature per secret, separated by a space, so that a receiver
with either verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    content = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(
    secrets_: Iterable[str], *, message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with each secret."""
    signatures = [sign(s, message_id=message_id, timestamp=timestamp, body=body) for s in secrets_]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }

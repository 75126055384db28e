"""Announcing changes that alter what verification answers, within the changing transaction.

Every change to a key, an application's permissions, a user's memberships or an account's alert
thresholds calls ``invalidate`` inside its transaction. On PostgreSQL that sends ``NOTIFY
keyservice_keys``, which the database delivers to every instance's listener
(``keyservice.verification.cache.Listener``) when, and only if, the transaction commits. The
request's own instance applies them right after its commit (``apply_committed``, from the
session dependency), without waiting for the round trip.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "keyservice_keys"
PENDING = "keyservice.invalidations"


@dataclass(frozen=True, slots=True)
class Target:
    """What changed: ``key``, ``application``, ``user`` or ``account``, and its id."""

    kind: str
    id: uuid.UUID

    def encode(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def decode(cls, payload: str) -> Target | None:
        kind, _, raw_id = payload.partition(":")
        try:
            return cls(kind, uuid.UUID(raw_id))
        except ValueError:
            return None


class Invalidated(Protocol):
    """What forgets on an invalidation: the key cache."""

    def invalidate(self, target: Target) -> None: ...


async def invalidate(session: AsyncSession, *targets: Target) -> None:
    """Announce, within the session's transaction, that ``targets`` changed.

    Delivered to every instance on commit (PostgreSQL), and applied to this instance's cache
    by the request's session dependency right after its commit.
    """
    session.info.setdefault(PENDING, []).extend(targets)
    if session.get_bind().dialect.name == "postgresql":
        for target in targets:
            await session.execute(select(func.pg_notify(CHANNEL, target.encode())))


def apply_committed(session: AsyncSession, cache: Invalidated) -> None:
    """Apply the invalidations of a just-committed session to the local cache."""
    for target in session.info.pop(PENDING, ()):
        cache.invalidate(target)


def discard_pending(session: AsyncSession) -> None:
    session.info.pop(PENDING, None)

"""Warnings before a key expires (``key.expiring``), and the news that it has (``key.expired``).

Each is recorded once per key, lead time and expiry, however many instances run the scheduler
and however often: its dedupe key makes a second recording a no-op (``events.record_many``). A
key's expiry changed by a rotation or an update is a new expiry, with warnings of its own.
Warnings come from the nearest lead time: a key created to expire in two days gets the 7-day
warning at once (saying when it expires), then the 1-day one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.events import catalogue as event_types
from keyservice.events import service as events
from keyservice.models import ApiKey, KeyKind

# Expiries further back are not announced: a scheduler that was down longer than this, or a
# first deployment over old keys, does not flood the receivers.
EXPIRED_LOOKBACK = timedelta(days=7)


def _lead(remaining: timedelta, leads: Sequence[timedelta]) -> timedelta | None:
    """The nearest lead time whose warning is due with ``remaining`` time left."""
    due = [lead for lead in leads if remaining <= lead]
    return min(due) if due else None


async def _accounts(session: AsyncSession, key: ApiKey) -> Sequence[uuid.UUID]:
    if key.account_id is not None:
        return [key.account_id]
    assert key.user_id is not None
    return await events.joined_accounts(session, key.user_id)


async def record_expiry_events(
    session: AsyncSession, *, now: datetime, lead_times: Sequence[timedelta]
) -> int:
    """Record the ``key.expiring`` and ``key.expired`` events that are due at ``now`` and not
    recorded yet; how many were due (recorded now or before)."""
    horizon = now + max(lead_times, default=timedelta())
    keys = (
        await session.scalars(
            select(ApiKey).where(
                ApiKey.revoked_at.is_(None),
                ApiKey.kind != KeyKind.session,
                ApiKey.expires_at.is_not(None),
                ApiKey.expires_at > now - EXPIRED_LOOKBACK,
                ApiKey.expires_at <= horizon,
            )
        )
    ).all()
    new: list[events.NewEvent] = []
    for key in keys:
        assert key.expires_at is not None
        ids = {
            "key_id": key.id,
            "kind": key.kind.value,
            "application_id": key.application_id,
            "user_id": key.user_id,
            "name": key.name,
            "hint": key.hint,
            "expires_at": key.expires_at,
        }
        stamp = key.expires_at.isoformat()
        data: event_types.KeyExpiringData | event_types.KeyExpiredData
        if key.expires_at <= now:
            data = event_types.KeyExpiredData(**ids)
            dedupe = f"key.expired:{key.id}:{stamp}"
        else:
            lead = _lead(key.expires_at - now, lead_times)
            if lead is None:
                continue
            data = event_types.KeyExpiringData(**ids, lead_seconds=int(lead.total_seconds()))
            dedupe = f"key.expiring:{key.id}:{int(lead.total_seconds())}:{stamp}"
        for account_id in await _accounts(session, key):
            new.append(
                events.NewEvent(
                    account_id=account_id,
                    data=data,
                    key_id=key.id,
                    # One account per dedupe key: a personal key's event is each account's.
                    dedupe_key=f"{dedupe}:{account_id}",
                )
            )
    await events.record_many(session, new)
    return len(new)

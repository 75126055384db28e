"""The webhooks' periodic work, run by the scheduler (``keyservice.scheduler``): disabling the
endpoints that have failed for too long, and removing old finished messages."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.models import EmailMessage, MessageStatus, WebhookEndpoint, WebhookMessage
from keyservice.webhooks.service import disable


async def disable_failing(session: AsyncSession, *, now: datetime, after: timedelta) -> int:
    """Disable every enabled endpoint whose every attempt has failed for ``after`` or longer,
    each with its ``webhook.endpoint.disabled`` event: how many."""
    failing = (
        await session.scalars(
            select(WebhookEndpoint.id).where(
                WebhookEndpoint.enabled.is_(True),
                WebhookEndpoint.failing_since.is_not(None),
                WebhookEndpoint.failing_since <= now - after,
            )
        )
    ).all()
    disabled = 0
    for endpoint_id in failing:
        disabled += await disable(session, endpoint_id, reason="failing", now=now)
    return disabled


async def remove_finished(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    older_than: timedelta,
    batch: int,
) -> int:
    """Delete delivered and failed messages (webhook messages with their attempts, and alert
    emails) finished before ``now -
    older_than``, ``batch`` at a time, each batch in a short transaction of its own so that
    no lock is held long: how many."""
    removed = 0
    for model in (WebhookMessage, EmailMessage):
        while True:
            old = (
                select(model.id)
                .where(
                    model.status.in_([MessageStatus.delivered, MessageStatus.failed]),
                    model.finished_at < now - older_than,
                )
                .limit(batch)
            )
            async with sessionmaker() as session:
                deleted = (
                    await session.execute(
                        delete(model)
                        .where(model.id.in_(old.scalar_subquery()))
                        .returning(model.id)
                        .execution_options(synchronize_session=False)
                    )
                ).all()
                await session.commit()
            removed += len(deleted)
            if len(deleted) < batch:
                break
    return removed

"""Fan-out: each recorded event becomes one message per endpoint of its account that is enabled
and subscribed to its type, written in the event's own transaction (a rolled-back change sends
nothing). The events outbox knows nothing of webhooks: this module subscribes to it.

On PostgreSQL it also sends ``NOTIFY keyservice_webhooks``, which the database delivers to every
instance's delivery worker when, and only if, the transaction commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.events import service as events
from keyservice.models import MessageStatus, WebhookEndpoint, WebhookMessage, utcnow

CHANNEL = "keyservice_webhooks"


def subscribed(event_types: Sequence[str], event_type: str) -> bool:
    return not event_types or event_type in event_types


async def fan_out(session: AsyncSession, recorded: Sequence[events.Recorded]) -> None:
    accounts = {event.account_id for event in recorded}
    endpoints = (
        await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.account_id, WebhookEndpoint.event_types)
            .where(WebhookEndpoint.account_id.in_(accounts), WebhookEndpoint.enabled.is_(True))
            .order_by(WebhookEndpoint.created_at)
        )
    ).all()
    if not endpoints:
        return
    now = utcnow()
    rows = [
        {
            "id": uuid.uuid4(),
            "account_id": event.account_id,
            "endpoint_id": endpoint.id,
            "event_id": event.id,
            "event_type": event.type,
            "status": MessageStatus.pending,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for event in recorded
        for endpoint in endpoints
        if endpoint.account_id == event.account_id and subscribed(endpoint.event_types, event.type)
    ]
    if not rows:
        return
    await session.execute(insert(WebhookMessage), rows)
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(CHANNEL, "")))


events.subscribe(fan_out)

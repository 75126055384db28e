"""The scheduler: expiry warnings and expiries announced once each, across instances too; an
endpoint that fails for too long disabled, with its event; old finished messages removed in
batches. Time is an injected clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import Clock
from factories import Tenant, create_application, create_endpoint, create_key, create_tenant
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.models import WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from keyservice.scheduler import Scheduler
from keyservice.webhooks.delivery import Delivery
from receivers import Receiver, endpoint_for

DAY = 24 * 3600


def make_scheduler(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Callable[..., Any],
    **overrides: Any,
) -> Scheduler:
    return Scheduler(sessionmaker, settings.model_copy(update=overrides), clock=clock)


async def _events(client: httpx.AsyncClient, tenant: Tenant, type_: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/events", headers=tenant.headers, params={"type": type_})
    events: list[dict[str, Any]] = response.json()["data"]
    return events


async def test_a_key_is_warned_before_it_expires_and_told_when_it_has_once_each(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    delivery: Delivery,
    receiver: Receiver,
) -> None:
    tenant = await create_tenant(session)
    await endpoint_for(client, tenant, receiver, event_types=["key.expiring", "key.expired"])
    application = await create_application(client, tenant)
    expires_at = utcnow() + timedelta(days=10)
    key = await create_key(client, tenant, application["id"], expires_at=expires_at.isoformat())
    await create_key(client, tenant, application["id"], name="Never expires")
    scheduler = make_scheduler(sessionmaker, settings, clock)

    await scheduler.run_once()
    assert await _events(client, tenant, "key.expiring") == []
    clock.advance(3 * DAY + 60)  # 7 days before
    for _ in range(3):
        await scheduler.run_once()
    [week] = await _events(client, tenant, "key.expiring")
    assert week["key_id"] == key["id"]
    assert week["data"]["lead_seconds"] == 7 * DAY
    assert week["data"]["hint"] == key["hint"]
    clock.advance(6 * DAY)  # 1 day before
    await scheduler.run_once()
    await scheduler.run_once()
    day, _ = await _events(client, tenant, "key.expiring")
    assert day["data"]["lead_seconds"] == DAY
    assert await _events(client, tenant, "key.expired") == []
    clock.advance(DAY)  # expired
    await scheduler.run_once()
    await scheduler.run_once()
    [expired] = await _events(client, tenant, "key.expired")
    assert expired["key_id"] == key["id"]
    assert "key" not in expired["data"]  # never the secret

    assert await delivery.run_once() == 3
    # Sent at once, so in any order.
    assert sorted(r.payload["type"] for r in receiver.received) == [
        "key.expired",
        "key.expiring",
        "key.expiring",
    ]
    assert all(r.verified_by for r in receiver.received)


async def test_a_revoked_key_is_not_warned(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    expires_at = utcnow() + timedelta(hours=12)
    key = await create_key(client, tenant, application["id"], expires_at=expires_at.isoformat())
    await client.post(f"/v1/keys/{key['id']}/revoke", headers=tenant.headers)
    await make_scheduler(sessionmaker, settings, clock).run_once()
    assert await _events(client, tenant, "key.expiring") == []


async def test_an_endpoint_failing_for_five_days_is_disabled_with_its_event(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    created = await create_endpoint(client, tenant, "https://hooks.partner.example/")
    endpoint_id = uuid.UUID(created["id"])
    failing_since = utcnow()
    await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(failing_since=failing_since)
    )
    await session.commit()
    scheduler = make_scheduler(sessionmaker, settings, clock)
    clock.advance(5 * DAY - 60)
    await scheduler.run_once()
    read = await client.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=tenant.headers)
    assert read.json()["enabled"] is True
    clock.advance(60)
    await scheduler.run_once()
    await scheduler.run_once()
    read = await client.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=tenant.headers)
    assert (read.json()["enabled"], read.json()["disabled_reason"]) == (False, "failing")
    [event] = await _events(client, tenant, "webhook.endpoint.disabled")
    assert event["data"]["reason"] == "failing"
    assert event["data"]["endpoint_id"] == created["id"]

    # Enabling it again is one call, and starts its failing time afresh.
    response = await client.post(
        f"/v1/webhooks/endpoints/{endpoint_id}/enable", headers=tenant.headers
    )
    assert response.json()["enabled"] is True
    await scheduler.run_once()
    read = await client.get(f"/v1/webhooks/endpoints/{endpoint_id}", headers=tenant.headers)
    assert read.json()["enabled"] is True


async def test_old_finished_messages_are_removed_in_batches(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    delivery: Delivery,
    receiver: Receiver,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    for number in range(5):
        await create_application(client, tenant, name=f"App {number}")
    assert await delivery.run_once() == 5
    await create_application(client, tenant, name="Pending")  # not attempted yet
    endpoint_id = uuid.UUID(created["id"])

    async def count(model: Any) -> int:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    scheduler = make_scheduler(sessionmaker, settings, clock, webhook_retention_batch=2)
    clock.advance(29 * DAY)
    await scheduler.run_once()
    assert await count(WebhookMessage) == 6
    clock.advance(2 * DAY)
    await scheduler.run_once()
    remaining = (
        await session.scalars(
            select(WebhookMessage.status).where(WebhookMessage.endpoint_id == endpoint_id)
        )
    ).all()
    assert remaining == ["pending"]
    assert await count(WebhookAttempt) == 0


async def test_two_instances_announce_each_expiry_once(
    postgres_url: str, settings: Settings, tenant: Tenant
) -> None:
    engines = [create_engine(settings, postgres_url) for _ in range(2)]
    try:
        makers = [create_sessionmaker(e) for e in engines]
        async with makers[0]() as session:
            from keyservice.keys import service as keys_service
            from keyservice.models import KeyKind
            from keyservice.security import Environment

            for number in range(20):
                key, _secret = keys_service.new_key(
                    prefix="ks",
                    kind=KeyKind.personal,
                    name=f"Key {number}",
                    environment=Environment.live,
                    scopes=[],
                    expires_at=utcnow() + timedelta(hours=number + 1),
                    user_id=tenant.owner.id,
                )
                session.add(key)
            await session.commit()
        clock = Clock()
        schedulers = [make_scheduler(m, settings, clock) for m in makers]
        for _ in range(3):
            await asyncio.gather(*(s.run_once() for s in schedulers))
        clock.advance(DAY)
        for _ in range(3):
            await asyncio.gather(*(s.run_once() for s in schedulers))
        async with makers[0]() as session:
            from keyservice.models import Event

            rows = (
                await session.execute(
                    select(Event.type, func.count())
                    .where(Event.type.in_(["key.expiring", "key.expired"]))
                    .group_by(Event.type)
                )
            ).all()
        assert dict(rows) == {"key.expiring": 20, "key.expired": 20}
    finally:
        for engine in engines:
            await engine.dispose()

"""Delivery: every event reaches the endpoints subscribed to it, signed so that the
standardwebhooks package verifies it, in a real HTTP receiver; retried on the schedule (an
injected clock, never a sleep), honouring Retry-After; 410 disables the endpoint; a rolled-back
change sends nothing; on PostgreSQL the commit's NOTIFY sends it at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import Clock, client_for, make_delivery
from factories import create_application, create_endpoint, create_tenant
from keyservice.config import Settings
from keyservice.events import catalogue
from keyservice.events import service as events
from keyservice.main import create_app
from keyservice.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from keyservice.webhooks.delivery import Delivery
from receivers import Answer, Receiver, endpoint_for
from servers import free_port


async def _messages(session: AsyncSession, endpoint_id: str) -> list[WebhookMessage]:
    return list(
        (
            await session.scalars(
                select(WebhookMessage)
                .where(WebhookMessage.endpoint_id == uuid.UUID(endpoint_id))
                .execution_options(populate_existing=True)
            )
        ).all()
    )


async def _attempts(session: AsyncSession, message_id: uuid.UUID) -> list[WebhookAttempt]:
    return list(
        (
            await session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.message_id == message_id)
                .order_by(WebhookAttempt.attempted_at)
            )
        ).all()
    )


async def test_each_event_reaches_its_subscribers_verified_by_standardwebhooks(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery, receiver: Receiver
) -> None:
    tenant = await create_tenant(session)
    everything = await endpoint_for(client, tenant, receiver)
    async with Receiver() as keys_only, Receiver() as disabled:
        await endpoint_for(client, tenant, keys_only, event_types=["key.created"])
        off = await endpoint_for(client, tenant, disabled)
        await client.post(f"/v1/webhooks/endpoints/{off['id']}/disable", headers=tenant.headers)
        # Another account's event is none of this endpoint's business.
        await create_application(client, await create_tenant(session, "Other"))

        application = await create_application(client, tenant)
        assert await delivery.run_once() == 1
        assert keys_only.received == disabled.received == []

    [received] = receiver.received
    assert received.verified_by == [everything["secret"]]
    [event] = (
        await client.get(
            "/v1/events", headers=tenant.headers, params={"type": "application.created"}
        )
    ).json()["data"]
    assert received.payload == {
        "type": "application.created",
        "timestamp": received.payload["timestamp"],
        "data": event["data"],
    }
    assert datetime.fromisoformat(received.payload["timestamp"]) == datetime.fromisoformat(
        event["created_at"]
    )
    assert event["data"]["application_id"] == application["id"]
    [message] = await _messages(session, everything["id"])
    assert received.id == str(message.id)
    assert received.headers["content-type"] == "application/json"
    assert message.status == "delivered"
    [attempt] = await _attempts(session, message.id)
    assert (attempt.status_code, attempt.success, attempt.response_excerpt) == (200, True, "ok")
    # Delivered once: nothing is due any more.
    assert await delivery.run_once() == 0


async def test_during_a_rotation_each_secret_verifies_the_delivery(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery, receiver: Receiver
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    rotated = (
        await client.post(
            f"/v1/webhooks/endpoints/{created['id']}/rotate-secret", headers=tenant.headers
        )
    ).json()
    receiver.secrets.append(rotated["secret"])
    await create_application(client, tenant)
    await delivery.run_once()
    [received] = receiver.received
    assert received.verified_by == [created["secret"], rotated["secret"]]
    assert len(received.headers["webhook-signature"].split(" ")) == 2


async def test_a_rolled_back_change_sends_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    delivery: Delivery,
    receiver: Receiver,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    async with sessionmaker() as changing:
        await events.record(
            changing,
            account_id=tenant.account.id,
            data=catalogue.ApplicationDeletedData(
                application_id=uuid.uuid4(), name="Never was", key_ids=[]
            ),
        )
        assert len(await _messages(changing, created["id"])) == 1
        await changing.rollback()
    assert await _messages(session, created["id"]) == []
    assert await delivery.run_once() == 0
    assert receiver.received == []


async def test_a_failing_endpoint_is_retried_five_times_on_the_schedule(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(500, body=b"database down " + b"x" * 5000)
    await create_application(client, tenant)

    assert await delivery.run_once() == 1
    for delay in (5, 300, 1800, 7200, 18000):  # the default schedule
        clock.advance(delay - 1)
        assert await delivery.run_once() == 0, delay
        clock.advance(1)
        assert await delivery.run_once() == 1, delay
    clock.advance(7 * 24 * 3600)
    assert await delivery.run_once() == 0

    assert len(receiver.received) == 6
    assert len({r.id for r in receiver.received}) == 1  # one webhook-id for every attempt
    assert all(r.verified_by for r in receiver.received)
    [message] = await _messages(session, created["id"])
    assert (message.status, message.attempts, message.next_attempt_at) == ("failed", 6, None)
    attempts = await _attempts(session, message.id)
    assert [a.status_code for a in attempts] == [500] * 6
    assert len(attempts[0].response_excerpt) == 4096
    assert attempts[0].response_excerpt.startswith("database down")


async def test_retries_are_spread_by_jitter(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    receiver: Receiver,
) -> None:
    worker = make_delivery(sessionmaker, settings, clock, jitter=1.0)  # the most jitter: +10%
    try:
        tenant = await create_tenant(session)
        await endpoint_for(client, tenant, receiver)
        receiver.default = Answer(500)
        await create_application(client, tenant)
        assert await worker.run_once() == 1
        clock.advance(5.4)
        assert await worker.run_once() == 0
        clock.advance(0.1)
        assert await worker.run_once() == 1
    finally:
        await worker.stop()


async def test_retry_after_is_honoured_on_429_and_503(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    await endpoint_for(client, tenant, receiver)
    receiver.answers.extend(
        [
            Answer(429, {"retry-after": "120"}),
            Answer(503, {"retry-after": "600"}),
            Answer(204, body=b""),
        ]
    )
    await create_application(client, tenant)
    assert await delivery.run_once() == 1
    clock.advance(119)
    assert await delivery.run_once() == 0  # not at 5 s: the receiver asked for 120
    clock.advance(1)
    assert await delivery.run_once() == 1
    clock.advance(599)
    assert await delivery.run_once() == 0
    clock.advance(1)
    assert await delivery.run_once() == 1
    assert [r.id for r in receiver.received] == [receiver.received[0].id] * 3


async def test_410_disables_the_endpoint_at_once_and_says_so(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    async with Receiver() as watcher:
        await endpoint_for(client, tenant, watcher, event_types=["webhook.endpoint.disabled"])
        receiver.default = Answer(410)
        await create_application(client, tenant)
        assert await delivery.run_once() == 1
        endpoint = (
            await client.get(f"/v1/webhooks/endpoints/{created['id']}", headers=tenant.headers)
        ).json()
        assert (endpoint["enabled"], endpoint["disabled_reason"]) == (False, "gone")
        [message] = await _messages(session, created["id"])
        assert message.status == "failed"

        # The event says so, to the endpoints that listen for it.
        assert await delivery.run_once() == 1
        [told] = watcher.received
        assert told.verified_by
        assert told.payload["type"] == "webhook.endpoint.disabled"
        assert told.payload["data"] == {
            "endpoint_id": created["id"],
            "url": receiver.url,
            "reason": "gone",
            "failing_since": None,
        }

    # Nothing more goes to it, until it is enabled again.
    await create_application(client, tenant, name="Second")
    clock.advance(3600)
    assert await delivery.run_once() == 0
    assert len(receiver.received) == 1
    await client.post(f"/v1/webhooks/endpoints/{created['id']}/enable", headers=tenant.headers)
    receiver.default = Answer(200)
    await create_application(client, tenant, name="Third")
    assert await delivery.run_once() == 1
    assert receiver.received[-1].payload["data"]["name"] == "Third"


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery, receiver: Receiver
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(302, {"location": receiver.url + "/elsewhere"})
    await create_application(client, tenant)
    await delivery.run_once()
    assert len(receiver.received) == 1
    [message] = await _messages(session, created["id"])
    assert message.status == "pending"
    [attempt] = await _attempts(session, message.id)
    assert (attempt.status_code, attempt.success) == (302, False)


async def test_an_unreachable_endpoint_is_an_attempt_that_says_why(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery
) -> None:
    tenant = await create_tenant(session)
    created = await create_endpoint(client, tenant, f"http://127.0.0.1:{free_port()}/hooks")
    await create_application(client, tenant)
    assert await delivery.run_once() == 1
    [message] = await _messages(session, created["id"])
    [attempt] = await _attempts(session, message.id)
    assert (attempt.status_code, attempt.error, attempt.success) == (None, "refused", False)
    endpoint = await session.get(WebhookEndpoint, uuid.UUID(created["id"]))
    assert endpoint is not None
    await session.refresh(endpoint)
    assert endpoint.failing_since is not None


async def test_production_checks_the_address_again_at_delivery(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    receiver: Receiver,
) -> None:
    # Registered while loopback was allowed; the deployment no longer allows it.
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    worker = make_delivery(sessionmaker, settings.model_copy(update={"mode": "production"}), clock)
    try:
        await create_application(client, tenant)
        assert await worker.run_once() == 1
    finally:
        await worker.stop()
    assert receiver.received == []
    [message] = await _messages(session, created["id"])
    [attempt] = await _attempts(session, message.id)
    assert attempt.error == "forbidden_address"
    assert "not a public address" in attempt.response_excerpt


async def test_a_commit_wakes_the_workers_at_once_on_postgresql(
    postgres_url: str, settings: Settings, receiver: Receiver
) -> None:
    # Polling once a minute: only the commit's NOTIFY can explain a delivery within the test.
    app = create_app(
        settings.model_copy(update={"database_url": postgres_url, "webhook_poll_seconds": 60.0})
    )
    async with app.router.lifespan_context(app), client_for(app) as client:
        async with app.state.sessionmaker() as session:
            tenant = await create_tenant(session)
        await endpoint_for(client, tenant, receiver)
        await create_application(client, tenant)
        [received] = await receiver.wait_for(1, timeout=20)
        assert received.verified_by
        assert received.payload["type"] == "application.created"


async def test_a_worker_stops_even_when_woken_as_it_is_stopped(delivery: Delivery) -> None:
    # On Python 3.11, asyncio.wait_for returned the wake's result instead of the cancel that
    # came with it: the worker went on, and stop() waited for it forever.
    for _ in range(50):
        await delivery.start()
        await asyncio.sleep(0)
        delivery.wake()
        async with asyncio.timeout(10):
            await delivery.stop()
        workers = [t for t in asyncio.all_tasks() if t.get_name() == "keyservice-webhook-delivery"]
        assert workers == []

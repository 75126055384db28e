"""The proof: two instances on one PostgreSQL database deliver 1,000 events to 3 real
receivers. Healthy receivers get every message exactly once; a receiver that was down gets
every message once it is back, within the retries the schedule allows; claims left by a worker
that stopped are taken over when their lease ends. Retries are made due by moving the
instances' clock, never by waiting for them."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select

from conftest import Clock, client_for
from factories import Tenant, create_tenant
from keyservice.config import Settings
from keyservice.events import service as events
from keyservice.main import create_app
from keyservice.models import MessageStatus, WebhookAttempt, WebhookMessage, utcnow
from keyservice.webhooks.delivery import Delivery
from keyservice.webhooks.transport import CONNECTIONS_PER_ORIGIN
from receivers import Receiver, endpoint_for
from servers import cli_env, serving

# Raise it to push further (the suite keeps the number the issue asks for).
EVENTS = int(os.environ.get("KEYSERVICE_TEST_PROOF_EVENTS", "1000"))


class FrozenClock:
    """A time that moves only when told: ahead of the real one, so that new messages (due at
    their real creation time) are due at once, and retries only when the test says."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _delivery(app: FastAPI) -> Delivery:
    delivery: Delivery = app.state.runtime.delivery
    return delivery


async def _statuses(app: FastAPI) -> dict[str, int]:
    async with app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(WebhookMessage.status, func.count()).group_by(WebhookMessage.status)
            )
        ).all()
    return dict(rows)


async def _publish_deals(app: FastAPI, tenant: Tenant, count: int) -> None:
    """``count`` of the product's ``deal.won`` events, committed at once."""
    async with app.state.sessionmaker() as session:
        await events.record_many(
            session,
            [
                events.NewEvent(
                    account_id=tenant.account.id,
                    data=events.Published("deal.won", {"deal": number}),
                )
                for number in range(count)
            ],
        )
        await session.commit()


def _exactly_once(receiver: Receiver) -> None:
    ids = Counter(r.id for r in receiver.received)
    assert len(ids) == EVENTS, len(ids)
    assert max(ids.values()) == 1, ids.most_common(3)
    assert all(r.verified_by for r in receiver.received)


async def test_two_instances_deliver_a_thousand_events_to_three_receivers(
    postgres_url: str, settings: Settings
) -> None:
    clock = FrozenClock()
    instance_settings = settings.model_copy(
        update={
            "database_url": postgres_url,
        }
    )
    first, second = create_app(instance_settings), create_app(instance_settings)
    for app in (first, second):
        _delivery(app).clock = clock
        _delivery(app).jitter = lambda: 0.0
    healthy, other_healthy = Receiver(), Receiver()
    down = Receiver()  # not started: nothing listens on its port yet
    async with (
        healthy,
        other_healthy,
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        client_for(first) as client,
    ):
        async with first.state.sessionmaker() as session:
            tenant = await create_tenant(session)
        for receiver in (healthy, other_healthy, down):
            await endpoint_for(client, tenant, receiver, event_types=["deal.won"])

        async with first.state.sessionmaker() as session:
            for start in range(0, EVENTS, 100):
                await events.record_many(
                    session,
                    [
                        events.NewEvent(
                            account_id=tenant.account.id,
                            data=events.Published("deal.won", {"deal": number}),
                        )
                        for number in range(start, min(start + 100, EVENTS))
                    ],
                )
                await session.commit()

        await healthy.wait_for(EVENTS, timeout=120)
        await other_healthy.wait_for(EVENTS, timeout=120)
        # Wait (bounded) for the down receiver's first attempts, refused, to be settled.
        for _ in range(300):
            async with first.state.sessionmaker() as session:
                attempted = await session.scalar(
                    select(func.count())
                    .select_from(WebhookMessage)
                    .where(WebhookMessage.attempts >= 1)
                )
            if attempted == 3 * EVENTS:
                break
            await asyncio.sleep(0.1)
        assert await _statuses(first) == {
            MessageStatus.delivered: 2 * EVENTS,
            MessageStatus.pending: EVENTS,
        }
        _exactly_once(healthy)
        _exactly_once(other_healthy)
        deals = sorted(r.payload["data"]["deal"] for r in healthy.received)
        assert deals == list(range(EVENTS))

        # The third receiver comes back; its messages' retries fall due.
        await down.start()
        try:
            clock.advance(5)
            for app in (first, second):
                _delivery(app).wake()
            await down.wait_for(EVENTS, timeout=120)
            # Received is not yet settled: wait (bounded) for the workers to record it.
            for _ in range(300):
                if await _statuses(first) == {MessageStatus.delivered: 3 * EVENTS}:
                    break
                await asyncio.sleep(0.1)
            _exactly_once(down)
        finally:
            await down.stop()

        async with first.state.sessionmaker() as session:
            attempts = (
                await session.execute(
                    select(WebhookMessage.attempts, func.count()).group_by(WebhookMessage.attempts)
                )
            ).all()
        counts: dict[Any, int] = dict(attempts)
        assert max(counts) <= 1 + len(instance_settings.webhook_retry_schedule)
        assert counts == {1: 2 * EVENTS, 2: EVENTS}  # the down one's: refused, then delivered
        assert await _statuses(first) == {MessageStatus.delivered: 3 * EVENTS}


async def test_a_stopped_workers_claims_are_taken_over_after_their_lease(
    postgres_url: str, settings: Settings
) -> None:
    clock = Clock()
    instance_settings = settings.model_copy(
        update={"database_url": postgres_url, "webhook_claim_lease_seconds": 60.0}
    )
    first, second = create_app(instance_settings), create_app(instance_settings)
    for app in (first, second):
        _delivery(app).clock = clock
    async with (
        Receiver() as receiver,
        first.router.lifespan_context(first),
        client_for(first) as client,
    ):
        async with first.state.sessionmaker() as session:
            tenant = await create_tenant(session)
        await endpoint_for(client, tenant, receiver)
        # The second instance's worker claims a batch, then stops before sending anything: as
        # if its instance died mid-flight. (Its app is never started: no worker of its own.)
        await _delivery(first).stop()
        await _publish_deals(first, tenant, 30)
        claimed = await _delivery(second)._claim()
        assert len(claimed) == 30
        # The first instance's worker does not take claims that are still leased ...
        assert await _delivery(first).run_once() == 0
        clock.advance(59)
        assert await _delivery(first).run_once() == 0
        assert receiver.received == []
        # ... and takes them over when the lease ends.
        clock.advance(1)
        assert await _delivery(first).run_once() == 30
        assert sorted(r.id for r in receiver.received) == sorted(str(c.message_id) for c in claimed)
        assert len({r.id for r in receiver.received}) == 30
    engine = second.state.runtime.engine
    assert engine is not None
    await engine.dispose()


async def test_an_instance_killed_mid_delivery_has_its_claims_taken_over(
    postgres_url: str, settings: Settings, tmp_path: Path
) -> None:
    # A real `keyservice serve` claims and sends; it is killed (SIGKILL) while its deliveries
    # wait for their answers, and the other instance delivers them when their lease ends.
    lease, timeout = 5.0, 4.0
    # As many as it sends at once to one receiver: all of them unanswered when it dies.
    in_flight = CONNECTIONS_PER_ORIGIN
    instance_settings = settings.model_copy(
        update={
            "database_url": postgres_url,
            "webhook_claim_lease_seconds": lease,
            "webhook_timeout_seconds": timeout,
        }
    )
    survivor = create_app(instance_settings)
    key = settings.encryption_key
    assert key is not None
    env = cli_env(tmp_path) | {
        "KEYSERVICE_DATABASE_URL": postgres_url,
        "KEYSERVICE_ENCRYPTION_KEY": key.get_secret_value(),
        "KEYSERVICE_WEBHOOK_CLAIM_LEASE_SECONDS": str(lease),
        "KEYSERVICE_WEBHOOK_TIMEOUT_SECONDS": str(timeout),
    }
    async with (
        Receiver() as receiver,
        survivor.router.lifespan_context(survivor),
        client_for(survivor) as client,
    ):
        await _delivery(survivor).stop()  # only the instance to be killed delivers, at first
        async with survivor.state.sessionmaker() as session:
            tenant = await create_tenant(session)
        await endpoint_for(client, tenant, receiver)
        receiver.hold = asyncio.Event()
        with serving(tmp_path, env) as doomed:
            await _publish_deals(survivor, tenant, in_flight)
            first_tries = await receiver.wait_for(in_flight, timeout=30)
            claimed = {r.id for r in first_tries}
            assert len(claimed) == in_flight
            doomed.process.kill()
            doomed.process.wait(timeout=10)
        killed_at = time.monotonic()
        receiver.hold.set()
        await _delivery(survivor).start()
        received = await receiver.wait_for(2 * in_flight, timeout=lease + 30)
        taken_over_after = time.monotonic() - killed_at
        # Every message again, under the same webhook-id, once each, once the lease had ended.
        assert sorted(r.id for r in received[in_flight:]) == sorted(claimed)
        assert taken_over_after > lease - timeout
        # The receiver counts a delivery before answering it; its settlement follows.
        deadline = time.monotonic() + 10
        while await _statuses(survivor) != {MessageStatus.delivered: in_flight}:
            assert time.monotonic() < deadline, await _statuses(survivor)
            await asyncio.sleep(0.05)
        async with survivor.state.sessionmaker() as session:
            attempts = await session.scalar(select(func.count()).select_from(WebhookAttempt))
        assert attempts == in_flight  # the killed instance's attempts were never settled

"""The delivery worker: every instance runs one; each attempt is made by exactly one of them.

Messages are written by the fan-out (``keyservice.webhooks.fanout``) in the transaction of the
event they deliver. A worker claims due messages in a short transaction of its own
(``SELECT ... FOR UPDATE SKIP LOCKED``: instances never wait for nor take each other's rows) by
moving their due time forward by a lease and marking them with its claim. It then sends them,
outside any transaction, and settles each: the attempt recorded, the message delivered, failed,
or due again on the retry schedule. A claim that is never settled (the instance died) falls due
when its lease ends, and another worker takes it over: delivery is at least once, and the
``webhook-id`` that receivers deduplicate on is the message's id, the same on every attempt.

On PostgreSQL the fan-out's ``NOTIFY`` wakes every worker when the event's transaction commits,
so a first attempt leaves at once; retries, and SQLite, are found by polling.

Times that decide what is due come from an injected ``clock``, so that tests walk the retry
schedule without waiting; the ``webhook-timestamp`` header is the real time, which receivers
check against theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import httpx
from sqlalchemy import func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice import metrics
from keyservice.availability import Availability, describe
from keyservice.config import Settings
from keyservice.models import (
    Event,
    MessageStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    utcnow,
)
from keyservice.secretbox import Keyring
from keyservice.webhooks.fanout import CHANNEL
from keyservice.webhooks.sending import Outcome, body_of, build_request, send
from keyservice.webhooks.service import disable, signing_secrets
from keyservice.webhooks.ssrf import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claimed:
    message_id: uuid.UUID
    attempts: int
    endpoint: WebhookEndpoint
    event: Event


class Delivery:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        keyring: Keyring,
        policy: Policy,
        availability: Availability | None = None,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.keyring = keyring
        self.policy = policy
        self.availability = availability
        self.clock = clock
        self.jitter = jitter
        self.schedule = settings.webhook_retry_schedule
        self.lease = timedelta(seconds=settings.webhook_claim_lease_seconds)
        self.batch_size = settings.webhook_batch_size
        self.poll_seconds = settings.webhook_poll_seconds
        self.timeout = settings.webhook_timeout_seconds
        self.worker_id = uuid.uuid4()
        self.client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_logged = False

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.schedule)

    def wake(self) -> None:
        self._wake.set()

    def http(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(
                timeout=self.timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=self.batch_size),
                trust_env=False,
            )
        return self.client

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyservice-webhook-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()
            if self.availability is not None and self.availability.down:
                continue  # the probe says when it is back; nothing to claim meanwhile
            try:
                while await self.run_once():
                    pass
                await self.sample_backlog()
            except Exception as exc:
                if self.availability is not None and self.availability.failed(exc):
                    continue  # the outage was logged once, when it began
                if not self._failing_logged:
                    logger.exception("webhook delivery failed; retrying at each poll")
                    self._failing_logged = True
            else:
                self._failing_logged = False

    async def sample_backlog(self) -> float:
        """Set (and return) how long the most overdue pending message has been due."""
        now = self.clock()
        async with self.sessionmaker() as session:
            oldest = await session.scalar(
                select(func.min(WebhookMessage.next_attempt_at)).where(
                    WebhookMessage.status == MessageStatus.pending,
                    WebhookMessage.next_attempt_at <= now,
                )
            )
        age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        metrics.WEBHOOK_OLDEST_PENDING.set(age)
        return age

    async def run_once(self) -> int:
        """Claim the due messages (a batch), send them, settle them: how many were claimed."""
        claimed = await self._claim()
        if not claimed:
            return 0
        box = self.keyring.box()
        client = self.http()
        requests = [
            build_request(
                c.endpoint.url,
                signing_secrets(c.endpoint, box=box),
                message_id=str(c.message_id),
                body=body_of(c.event.type, c.event.created_at, c.event.data),
            )
            for c in claimed
        ]
        outcomes = await asyncio.gather(*(send(client, self.policy, r) for r in requests))
        for item, outcome in zip(claimed, outcomes, strict=True):
            await self._settle(item, outcome)
        return len(claimed)

    async def _claim(self) -> list[Claimed]:
        now = self.clock()
        due = (
            select(WebhookMessage.id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
            .where(
                WebhookMessage.status == MessageStatus.pending,
                WebhookMessage.next_attempt_at <= now,
                WebhookEndpoint.enabled.is_(True),
            )
            .order_by(WebhookMessage.next_attempt_at)
            .limit(self.batch_size)
            .with_for_update(of=WebhookMessage, skip_locked=True)
        )
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    update(WebhookMessage)
                    .where(WebhookMessage.id.in_(due.scalar_subquery()))
                    .values(next_attempt_at=now + self.lease, claimed_by=self.worker_id)
                    .returning(WebhookMessage.id, WebhookMessage.attempts)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            if not rows:
                await session.commit()
                return []
            attempts = {row.id: row.attempts for row in rows}
            details = (
                await session.execute(
                    select(WebhookMessage.id, WebhookEndpoint, Event)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
                    .join(Event, Event.id == WebhookMessage.event_id)
                    .where(WebhookMessage.id.in_(list(attempts)))
                    .order_by(WebhookMessage.next_attempt_at, WebhookMessage.id)
                )
            ).all()
            await session.commit()
        return [Claimed(row[0], attempts[row[0]], row[1], row[2]) for row in details]

    def _next_attempt(self, attempts: int, outcome: Outcome, now: datetime) -> datetime | None:
        """When to try again after the ``attempts``-th attempt failed; None: never."""
        if attempts >= self.max_attempts:
            return None
        if outcome.retry_after is not None:
            return now + timedelta(seconds=outcome.retry_after)
        delay = self.schedule[attempts - 1]
        return now + timedelta(seconds=delay * (1 + 0.1 * self.jitter()))

    async def _settle(self, item: Claimed, outcome: Outcome) -> None:
        now = self.clock()
        attempts = item.attempts + 1
        gone = outcome.status_code == 410
        next_at = None if outcome.success or gone else self._next_attempt(attempts, outcome, now)
        if outcome.success:
            status = MessageStatus.delivered
        elif next_at is None:
            status = MessageStatus.failed
        else:
            status = MessageStatus.pending
        metrics.webhook_delivery(
            "delivered"
            if outcome.success
            else "gone"
            if gone
            else "retry"
            if status is MessageStatus.pending
            else "failed"
        )
        async with self.sessionmaker() as session:
            session.add(
                WebhookAttempt(
                    message_id=item.message_id,
                    attempted_at=now,
                    status_code=outcome.status_code,
                    latency_ms=outcome.latency_ms,
                    response_excerpt=outcome.excerpt,
                    error=outcome.error,
                    success=outcome.success,
                )
            )
            # Only while the claim is ours: a worker that took it over after our lease settles it.
            await session.execute(
                update(WebhookMessage)
                .where(
                    WebhookMessage.id == item.message_id,
                    WebhookMessage.claimed_by == self.worker_id,
                )
                .values(
                    attempts=WebhookMessage.attempts + 1,
                    status=status,
                    next_attempt_at=next_at,
                    claimed_by=None,
                    finished_at=None if status is MessageStatus.pending else now,
                )
                .execution_options(synchronize_session=False)
            )
            endpoint = WebhookEndpoint.__table__.c
            if outcome.success:
                await session.execute(
                    update(WebhookEndpoint)
                    .where(endpoint.id == item.endpoint.id, endpoint.failing_since.is_not(None))
                    .values(failing_since=None)
                )
            else:
                await session.execute(
                    update(WebhookEndpoint)
                    .where(endpoint.id == item.endpoint.id)
                    .values(failing_since=func.coalesce(endpoint.failing_since, now))
                )
            if gone:
                await disable(session, item.endpoint.id, reason="gone", now=now)
            await session.commit()


class WakeListener:
    """LISTENs for the fan-out's NOTIFY on a dedicated PostgreSQL connection and wakes the
    worker, reconnecting as needed (like the key cache's listener)."""

    def __init__(self, url: URL, delivery: Delivery, *, ping_seconds: float = 10.0) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._delivery = delivery
        self._ping_seconds = ping_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._lost_logged = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyservice-webhook-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, *_args: object) -> None:
        self._delivery.wake()

    @staticmethod
    def _lost(lost: asyncio.Event, _connection: object) -> None:
        lost.set()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                lost = asyncio.Event()
                connection.add_termination_listener(functools.partial(self._lost, lost))
                await connection.add_listener(CHANNEL, self._on_notify)
                self.connected.set()
                # Whatever was notified while we were not listening is found now.
                self._delivery.wake()
                if self._lost_logged:
                    logger.info("webhook listener connected again")
                    self._lost_logged = False
                delay = 0.5
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=self._ping_seconds)
                    if lost.is_set():
                        raise ConnectionError("the listening connection was closed")
                    await connection.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                if not self._lost_logged:
                    logger.info(
                        "webhook listener lost its connection (%s); deliveries are found by "
                        "polling until it is back",
                        describe(exc),
                    )
                    self._lost_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()

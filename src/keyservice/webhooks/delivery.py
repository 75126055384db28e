"""The delivery worker: every instance runs one; each attempt is made by exactly one of them.

Messages are written by the fan-out (``keyservice.webhooks.fanout``) in the transaction of the
event they deliver. A worker claims due messages in a short transaction of its own
(``SELECT ... FOR UPDATE SKIP LOCKED``: instances never wait for nor take each other's rows) by
moving their due time forward by a lease and marking them with its claim. It then sends them,
outside any transaction, and settles each: the attempt recorded, the message delivered, failed,
or due again on the retry schedule. A claim that is never settled (the instance died) falls due
when its lease ends, and another worker takes it over: delivery is at least once, and the
``webhook-id`` that receivers deduplicate on is the message's id, the same on every attempt.

A worker keeps up to ``webhook_max_in_flight`` deliveries going, claiming ``webhook_batch_size``
more whenever it has room for them, so that a slow endpoint holds up its own deliveries and not
the others'. Each delivery is settled as soon as its answer came, together with every other
that came meanwhile, in one transaction (a few statements whatever their number): while one
transaction is written, the next gathers.

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
import typing
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import Table, bindparam, func, insert, select, update
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
from keyservice.webhooks.sending import Outcome, Request, body_of, build_request, send
from keyservice.webhooks.service import disable, signing_secrets
from keyservice.webhooks.ssrf import Policy
from keyservice.webhooks.transport import Sender

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
        self.max_in_flight = max(settings.webhook_max_in_flight, self.batch_size)
        self.poll_seconds = settings.webhook_poll_seconds
        self.timeout = settings.webhook_timeout_seconds
        self.worker_id = uuid.uuid4()
        self.sender = Sender(timeout=self.timeout, ca_file=settings.webhook_ca_file)
        # The tester's requests do not wait behind the deliveries to the same origin.
        self.tester = Sender(
            timeout=self.timeout, connections_per_origin=2, ca_file=settings.webhook_ca_file
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing_logged = False
        self._settler = _Settler(self._write_outcomes)

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.schedule)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyservice-webhook-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            # Waited for, not awaited: a cancel of stop() itself (a bounded shutdown) is not
            # taken for the worker's.
            await asyncio.wait([task])
        await self._settler.finish()
        await self.sender.aclose()
        await self.tester.aclose()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for's inner task could
            # swallow a cancel that came as the wake did, and stop() then waited forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            if self.availability is not None and self.availability.down:
                continue  # the probe says when it is back; nothing to claim meanwhile
            try:
                await self.pump()
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
        requests = self._requests(claimed)
        outcomes = await asyncio.gather(*(self._send(r) for r in requests))
        await self._write_outcomes(list(zip(claimed, outcomes, strict=True)))
        return len(claimed)

    async def pump(self) -> int:
        """Deliver until nothing is due: up to ``max_in_flight`` deliveries at once, a batch
        claimed whenever there is room for one, each settled as soon as it is answered. Once
        nothing more is due, what is in flight is finished, and a wake (a new message) has the
        worker claim again meanwhile. How many deliveries were attempted."""
        in_flight: set[asyncio.Task[None]] = set()
        woken: asyncio.Task[Any] | None = None
        attempted = 0
        drained = False
        try:
            while True:
                room = self.max_in_flight - len(in_flight)
                if not drained and room >= self.batch_size:
                    claimed = await self._claim()
                    attempted += len(claimed)
                    drained = len(claimed) < self.batch_size
                    for item, request in zip(claimed, self._requests(claimed), strict=True):
                        in_flight.add(
                            asyncio.create_task(
                                self._attempt(item, request), name="keyservice-webhook-attempt"
                            )
                        )
                    if not drained:
                        continue
                if not in_flight:
                    return attempted
                if woken is None:
                    woken = asyncio.create_task(self._wake.wait(), name="keyservice-webhook-wake")
                done, _ = await asyncio.wait(
                    [*in_flight, woken], return_when=asyncio.FIRST_COMPLETED
                )
                if woken in done:
                    self._wake.clear()
                    woken, drained = None, False
                for task in done & in_flight:
                    in_flight.discard(task)
                    task.result()
        finally:
            # Stopped, or failed: what is in flight stops too. Its claims fall due again when
            # their lease ends (at least once); the answers already come are settled.
            if woken is not None:
                woken.cancel()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    def _requests(self, claimed: Sequence[Claimed]) -> list[Request]:
        box = self.keyring.box()
        secrets_by_endpoint: dict[uuid.UUID, list[str]] = {}
        requests = []
        for item in claimed:
            secrets_ = secrets_by_endpoint.get(item.endpoint.id)
            if secrets_ is None:
                secrets_ = secrets_by_endpoint[item.endpoint.id] = signing_secrets(
                    item.endpoint, box=box
                )
            requests.append(
                build_request(
                    item.endpoint.url,
                    secrets_,
                    message_id=str(item.message_id),
                    body=body_of(item.event.type, item.event.created_at, item.event.data),
                )
            )
        return requests

    async def _send(self, request: Request) -> Outcome:
        return await send(self.sender, self.policy, request)

    async def _attempt(self, item: Claimed, request: Request) -> None:
        await self._settler.settle(item, await self._send(request))

    async def _claim(self, limit: int | None = None) -> list[Claimed]:
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
            .limit(limit or self.batch_size)
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

    def _settled(self, item: Claimed, outcome: Outcome, now: datetime) -> dict[str, Any]:
        """The message's new state after this attempt (its update's parameters)."""
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
        return {
            "message_id": item.message_id,
            "new_status": status.value,
            "next_at": next_at,
            "finished": None if status is MessageStatus.pending else now,
        }

    async def _write_outcomes(self, outcomes: Sequence[tuple[Claimed, Outcome]]) -> None:
        """Settle deliveries in one transaction: their attempts recorded, their messages
        delivered, failed or due again (only while the claim is ours: a worker that took it over
        after our lease settles it), their endpoints' failing state, and an endpoint that
        answered 410 disabled."""
        if not outcomes:
            return
        now = self.clock()
        attempts = [
            {
                "id": uuid.uuid4(),
                "message_id": item.message_id,
                "attempted_at": now,
                "status_code": outcome.status_code,
                "latency_ms": outcome.latency_ms,
                "response_excerpt": outcome.excerpt,
                "error": outcome.error,
                "success": outcome.success,
            }
            for item, outcome in outcomes
        ]
        settled = [
            self._settled(item, outcome, now) | {"worker": self.worker_id}
            for item, outcome in sorted(outcomes, key=lambda o: o[0].message_id)
        ]
        # The last answer of each endpoint says whether it is failing now.
        last = {item.endpoint.id: outcome for item, outcome in outcomes}
        recovered = sorted(e for e, outcome in last.items() if outcome.success)
        failing = sorted(e for e, outcome in last.items() if not outcome.success)
        gone = sorted({i.endpoint.id for i, outcome in outcomes if outcome.status_code == 410})
        async with self.sessionmaker() as session:
            await session.execute(insert(WebhookAttempt), attempts)
            await session.execute(_SETTLE, settled)
            if recovered:
                await session.execute(_endpoints_failing(recovered, since=None))
            if failing:
                await session.execute(_endpoints_failing(failing, since=now))
            for endpoint_id in gone:
                await disable(session, endpoint_id, reason="gone", now=now)
            await session.commit()


_MESSAGES = typing.cast(Table, WebhookMessage.__table__)
_ENDPOINTS = typing.cast(Table, WebhookEndpoint.__table__)
_messages = _MESSAGES.c
# Each settled message: one statement for them all, sent as a batch of parameters.
_SETTLE = (
    update(_MESSAGES)
    .where(_messages.id == bindparam("message_id"), _messages.claimed_by == bindparam("worker"))
    .values(
        attempts=_messages.attempts + 1,
        status=bindparam("new_status"),
        next_attempt_at=bindparam("next_at"),
        claimed_by=None,
        finished_at=bindparam("finished"),
    )
)


def _endpoints_failing(endpoint_ids: Sequence[uuid.UUID], *, since: datetime | None) -> Any:
    """Mark the endpoints failing since ``since`` (None: they are not failing), those whose
    state changes only: the rows are locked (in id order, so that concurrent settlements cannot
    deadlock) only when they change, which is rare."""
    endpoints = _ENDPOINTS.c
    changes = (
        endpoints.failing_since.is_(None)
        if since is not None
        else endpoints.failing_since.is_not(None)
    )
    changing = (
        select(endpoints.id)
        .where(endpoints.id.in_(endpoint_ids), changes)
        .order_by(endpoints.id)
        .with_for_update()
        .cte("changing")
    )
    return (
        update(_ENDPOINTS)
        .where(endpoints.id.in_(select(changing.c.id)))
        .values(failing_since=since)
    )


class _Settler:
    """Writes deliveries' outcomes as they come, many in one transaction: the outcomes that come
    while one is written go in the next (a group commit). ``settle`` returns once its outcome
    is written, or raises what failed its transaction."""

    def __init__(self, write: Callable[[Sequence[tuple[Claimed, Outcome]]], Any]) -> None:
        self._write = write
        self._pending: list[tuple[Claimed, Outcome, asyncio.Future[None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def settle(self, item: Claimed, outcome: Outcome) -> None:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, outcome, written))
        if self._writing is None:
            self._writing = asyncio.create_task(
                self._write_pending(), name="keyservice-webhook-settle"
            )
        # A delivery stopped meanwhile leaves its outcome to be written all the same.
        await asyncio.shield(written)

    async def finish(self) -> None:
        """Wait for the outcomes already answered to be written (a worker that stops)."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._write([(item, outcome) for item, outcome, _ in batch])
                except Exception as exc:
                    # Their claims fall due again when their lease ends.
                    for _, _, written in batch:
                        written.set_exception(exc)
                        written.exception()  # retrieved: nobody may be waiting any more
                else:
                    for _, _, written in batch:
                        written.set_result(None)
        finally:
            self._writing = None


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
                    # Not wait_for: on Python 3.11 it swallows a cancel that comes as the
                    # connection is lost, and the listener would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._ping_seconds):
                            await lost.wait()
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

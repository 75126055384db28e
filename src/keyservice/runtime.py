"""What an instance runs beside its requests, built in one place.

``Runtime`` builds the engine and sessions, the key cache and its invalidation listener, the
database probe, the failure throttle, the limiter, the usage recorder with its alerts, and the
verifier that uses them, and wires each to what it needs. Its workers start in the order they
were added and stop in reverse, each stop bounded in time and logged. A new kind of background
work (webhook delivery, a scheduler) is one ``add`` here.

Built with a ``sessionmaker`` (tests, on their own transaction), it owns no database and starts
nothing: the caller drives flushes and leases itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from keyservice import metrics
from keyservice.availability import Availability
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.events.product import ProductCatalogue
from keyservice.ratelimit.limiter import Limiter
from keyservice.scheduler import Scheduler
from keyservice.secretbox import Keyring, development_key_path
from keyservice.usage.alerts import Alerts
from keyservice.usage.recorder import UsageRecorder
from keyservice.verification.cache import KeyCache, Listener
from keyservice.verification.throttle import FailureThrottle
from keyservice.verification.verifier import Verifier
from keyservice.webhooks import email as alert_email
from keyservice.webhooks.delivery import Delivery, WakeListener
from keyservice.webhooks.email import Mailer
from keyservice.webhooks.ssrf import Policy

logger = logging.getLogger(__name__)

# However long a worker takes to stop, the instance stops after this long; what it had not done
# by then is what a crash would lose.
STOP_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Worker:
    name: str
    start: Callable[[], Awaitable[object]]
    stop: Callable[[], Awaitable[object]]


async def _nothing() -> None:
    return None


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.settings = settings
        self.stop_seconds = STOP_SECONDS
        self.engine: AsyncEngine | None = None
        if sessionmaker is None:
            self.engine = create_engine(settings)
            sessionmaker = create_sessionmaker(self.engine)
        self.sessionmaker = sessionmaker
        self.cache = KeyCache(
            max_entries=settings.cache_max_entries, ttl_seconds=settings.cache_ttl_seconds
        )
        self.availability = Availability(grace_seconds=settings.outage_grace_seconds)
        self.throttle = FailureThrottle(
            per_minute=settings.verify_failures_per_minute,
            block_seconds=settings.verify_block_seconds,
        )
        self.limiter = Limiter(sessionmaker, availability=self.availability)
        self.alerts = Alerts(
            quota_percents=settings.quota_alert_percents,
            rate_limited_refusals=settings.rate_limited_alert_refusals,
        )
        self.usage = UsageRecorder(
            sessionmaker,
            max_endpoints=settings.usage_max_endpoints,
            alerts=self.alerts,
            max_pending_rows=settings.usage_max_pending_rows,
            availability=self.availability,
        )
        self.verifier = Verifier(
            settings,
            sessionmaker=sessionmaker,
            cache=self.cache,
            availability=self.availability,
            throttle=self.throttle,
            limiter=self.limiter,
            usage=self.usage,
        )
        key = settings.encryption_key
        self.keyring = Keyring(
            key.get_secret_value() if key is not None else None,
            development_path=development_key_path(settings.effective_database_url),
        )
        self.ssrf_policy = Policy.of(settings)
        self.product_events = ProductCatalogue.load(settings.event_types)
        self.delivery = Delivery(
            sessionmaker,
            settings,
            keyring=self.keyring,
            policy=self.ssrf_policy,
            availability=self.availability,
        )
        self.workers: list[Worker] = []
        if self.engine is not None:
            self._add_database_workers(self.engine)

    def _add_database_workers(self, engine: AsyncEngine) -> None:
        self.add(Worker("database engine", _nothing, engine.dispose))

        async def probe() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        async def start_probe() -> None:
            self.availability.start(probe)

        self.add(Worker("database probe", start_probe, self.availability.stop))
        if engine.dialect.name == "postgresql":
            listener = Listener(engine.url, self.cache)
            self.add(Worker("invalidation listener", listener.start, listener.stop))
        self.add(Worker("rate-limit renewals", _nothing, self.limiter.stop))

        async def start_flusher() -> None:
            await self.usage.start(self.settings.usage_flush_seconds)

        self.add(Worker("webhook delivery", self.delivery.start, self.delivery.stop))
        scheduler = Scheduler(self.sessionmaker, self.settings, availability=self.availability)
        self.add(Worker("scheduler", scheduler.start, scheduler.stop))
        alert_email.enable(self.settings.smtp_url is not None)
        if self.settings.smtp_url is not None:
            mailer = Mailer(self.sessionmaker, self.settings, availability=self.availability)
            self.add(Worker("mailer", mailer.start, mailer.stop))
        if engine.dialect.name == "postgresql":
            wake = WakeListener(engine.url, self.delivery)
            self.add(Worker("webhook listener", wake.start, wake.stop))

        # Last started, first stopped: its final flush writes what was counted until then.
        self.add(Worker("usage flusher", start_flusher, self.usage.stop))
        sampler: list[asyncio.Task[None]] = []

        async def sample_every_second() -> None:
            while True:
                self.sample_metrics()
                await asyncio.sleep(1.0)

        async def start_sampler() -> None:
            sampler.append(asyncio.create_task(sample_every_second(), name="keyservice-metrics"))

        async def stop_sampler() -> None:
            for task in sampler:
                task.cancel()
            await asyncio.gather(*sampler, return_exceptions=True)

        self.add(Worker("metrics sampler", start_sampler, stop_sampler))

    def sample_metrics(self) -> None:
        """Set the gauges that describe a state: once a second, and before each scrape."""
        metrics.KEY_CACHE_ENTRIES.set(len(self.cache))
        metrics.USAGE_FLUSH_LAG.set(self.usage.lag_seconds())
        metrics.DATABASE_UP.set(0 if self.availability.down else 1)
        if self.engine is None:
            return
        pool: Any = self.engine.pool
        if hasattr(pool, "checkedout"):
            metrics.POOL_CONNECTIONS.labels("in_use").set(pool.checkedout())
            metrics.POOL_CONNECTIONS.labels("idle").set(pool.checkedin())
        # The pool's queue of connections; whoever waits for one waits on it. Not a public
        # attribute of SQLAlchemy's pool: read with care, 0 where it is not there.
        waiters = getattr(getattr(getattr(pool, "_pool", None), "_queue", None), "_getters", ())
        metrics.POOL_WAITING.set(len(waiters))

    def add(self, worker: Worker) -> None:
        self.workers.append(worker)

    async def start(self) -> None:
        started: list[Worker] = []
        try:
            for worker in self.workers:
                await worker.start()
                started.append(worker)
        except BaseException:
            await self._stop(started)
            raise

    async def stop(self) -> None:
        await self._stop(self.workers)

    async def _stop(self, workers: list[Worker]) -> None:
        for worker in reversed(workers):
            began = time.monotonic()
            try:
                await asyncio.wait_for(worker.stop(), timeout=self.stop_seconds)
            except TimeoutError:
                logger.warning("%s did not stop within %g s", worker.name, self.stop_seconds)
            except Exception:
                logger.exception("%s failed to stop", worker.name)
            else:
                logger.info("stopped %s in %.3f s", worker.name, time.monotonic() - began)

"""Periodic work that must happen once across instances: key expiry events, disabling endpoints
that fail for too long, and removing old webhook messages.

Every instance runs the scheduler (there is no leader to elect, nor lose). Each task runs in a
transaction of its own that first takes a PostgreSQL advisory lock (``pg_try_advisory_xact_lock``):
the instance that gets it does the work, the others skip the task this round. The lock is no
proof of once, only a saving: what makes each effect happen once is the effect itself (a dedupe
key per expiry event, ``UPDATE ... WHERE enabled`` per endpoint, deletions that find nothing
the second time). SQLite has one instance, and no lock to take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.availability import Availability
from keyservice.config import Settings
from keyservice.keys import expiry
from keyservice.models import utcnow
from keyservice.webhooks import maintenance

logger = logging.getLogger(__name__)

# Advisory lock ids, one per task: arbitrary, fixed, and keyservice's own.
LOCKS = {"key expiry": 7_215_001, "endpoint health": 7_215_002}


class Scheduler:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        availability: Availability | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.availability = availability
        self.clock = clock
        self.interval = settings.scheduler_interval_seconds
        self.lead_times = [timedelta(days=d) for d in settings.key_expiry_warning_days]
        self.disable_after = timedelta(seconds=settings.webhook_disable_after_seconds)
        self.retention = timedelta(days=settings.webhook_retention_days)
        self.retention_batch = settings.webhook_retention_batch
        self._task: asyncio.Task[None] | None = None
        self._failing_logged = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyservice-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if self.availability is None or not self.availability.down:
                try:
                    await self.run_once()
                except Exception as exc:
                    if self.availability is None or not self.availability.failed(exc):
                        if not self._failing_logged:
                            logger.exception("scheduled work failed; retrying every round")
                            self._failing_logged = True
                else:
                    self._failing_logged = False
            await asyncio.sleep(self.interval)

    async def run_once(self) -> None:
        now = self.clock()
        await self._once(
            "key expiry",
            lambda s: expiry.record_expiry_events(s, now=now, lead_times=self.lead_times),
        )
        await self._once(
            "endpoint health",
            lambda s: maintenance.disable_failing(s, now=now, after=self.disable_after),
        )
        await maintenance.remove_finished(
            self.sessionmaker, now=now, older_than=self.retention, batch=self.retention_batch
        )

    async def _once(self, name: str, work: Callable[[AsyncSession], Awaitable[object]]) -> None:
        async with self.sessionmaker() as session:
            if session.get_bind().dialect.name == "postgresql":
                locked = await session.scalar(select(func.pg_try_advisory_xact_lock(LOCKS[name])))
                if not locked:
                    return  # another instance does it this round
            await work(session)
            await session.commit()

"""Whether this instance can reach its database, and what it does while it cannot.

An outage begins with the first error that says the database is unreachable (a refused or
dropped connection, a server shutting down, a connection time-out) and ends when a probe
(``SELECT 1`` once a second) answers. Meanwhile:

- keys this instance has cached keep verifying for ``grace_seconds`` from the outage's start (a
  revocation made elsewhere meanwhile takes effect when the database is back), their usage kept in
  memory (up to a bound) and written when it returns;
- everything that needs the database answers ``DatabaseUnavailable`` at once (503 with
  ``Retry-After``; ``/v1/verify``: code ``UNAVAILABLE``), without trying the database for each
  request;
- one line is logged when the outage begins and one when it ends, not one per request.

Errors that are not about reaching the database (a constraint, bad data) are no outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
from sqlalchemy import exc as sa_exc

from keyservice import metrics
from keyservice.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

PROBE_SECONDS = 1.0
RETRY_AFTER_SECONDS = 5

_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable host, DNS
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (rather than refused a statement)."""
    for error in _chain(exc):
        if isinstance(error, DatabaseUnavailable):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, _UNREACHABLE):
            return True
    return False


def describe(exc: BaseException) -> str:
    """What went wrong, without the statement or its parameters: the innermost error's kind."""
    *_, root = _chain(exc)
    if isinstance(root, OSError) and root.strerror:
        return f"{type(root).__name__}: {root.strerror}"
    return type(root).__name__


class Availability:
    def __init__(
        self,
        *,
        grace_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace_seconds = grace_seconds
        self.clock = clock
        self.down_since: float | None = None
        self.reason: str | None = None
        self.outages = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def serves_cached(self) -> bool:
        """Whether cached keys may still be trusted: up, or down for less than the grace."""
        return self.down_since is None or self.clock() - self.down_since < self.grace_seconds

    def failed(self, exc: BaseException) -> bool:
        """If ``exc`` says the database is unreachable, note the outage (logged once) and return
        True; otherwise return False and change nothing."""
        if not is_unreachable(exc):
            return False
        if self.down_since is None:
            self.down_since = self.clock()
            self.reason = describe(exc)
            self.outages += 1
            metrics.DATABASE_UP.set(0)
            logger.warning(
                "database unreachable (%s): cached keys keep verifying for up to %g s, "
                "everything else answers 503 until it is back",
                self.reason,
                self.grace_seconds,
            )
            self._changed.set()
        return True

    def recovered(self) -> None:
        if self.down_since is None:
            return
        logger.info(
            "database reachable again after %.1f s of outage", self.clock() - self.down_since
        )
        self.down_since = None
        self.reason = None
        metrics.DATABASE_UP.set(1)

    def error(self) -> DatabaseUnavailable:
        since = "" if self.down_since is None else f" for {self.clock() - self.down_since:.0f} s"
        return DatabaseUnavailable(
            f"The database is unreachable{since} ({self.reason or 'no answer'}); try again shortly",
            retry_after=RETRY_AFTER_SECONDS,
        )

    def start(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Probe the database once a second while it is down, until it answers."""

        async def run() -> None:
            while True:
                await self._changed.wait()
                self._changed.clear()
                while self.down:
                    try:
                        # Not wait_for: on Python 3.11 it swallows a cancel that comes as the
                        # probe answers, and stop() would wait for this loop forever.
                        async with asyncio.timeout(PROBE_SECONDS * 5):
                            await probe()
                    except Exception:  # still down: the outage was logged when it began
                        await asyncio.sleep(PROBE_SECONDS)
                    else:
                        self.recovered()

        self._task = asyncio.create_task(run(), name="keyservice-database-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

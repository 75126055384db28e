"""The app as `make bench` serves it: keyservice's own app, plus counters that only the bench has.

bench/run.py starts it with uvicorn's factory mode (``uvicorn bench.server:create --factory``)
and configures it through the usual ``KEYSERVICE_*`` variables. The app is built as production
builds it, ``create_app(settings)`` without a sessionmaker, so that its own lifespan opens the
engine, starts the PostgreSQL invalidation listener and the usage flusher, and flushes at
shutdown, exactly as in production. It differs from a production instance only in what it counts:

- every SQL statement sent by any engine of the process (SQLAlchemy's ``before_cursor_execute``,
  listened for on the ``Engine`` class, since the app's engine is created inside its lifespan),
  with those of the usage flusher's task and those on the rate-limit buckets (leases) apart; and
  every connection checkout from a pool (each costs a pre-ping round trip, not a statement);
- garbage collection: the collector's pauses, all generations together, and how many were full
  (oldest generation) collections, which traverse every object the process keeps, its cached
  keys among them;
- verifications: admitted, refused by the rate limiter or quota, refused for another reason, so
  that a run whose key stopped verifying is not reported as a fast one (``POST /v1/verify``
  answers 200 either way). The lifespan creates the verifier, so it is not replaced: once the
  app's lifespan has started, its ``verify`` is wrapped in place.

``GET /bench/counters`` returns them, with the number of keys in the verification cache and the
leases the rate limiter took.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from keyservice.config import Settings
from keyservice.errors import OverLimit
from keyservice.main import create_app
from keyservice.verification.service import Verified
from keyservice.verification.verifier import Verifier

COUNTERS_PATH = "/bench/counters"
# The name keyservice.usage.recorder.UsageRecorder.start gives its periodic task.
FLUSHER_TASK = "keyservice-usage-flusher"
# The rate limiter's shared buckets (keyservice.models.RateBucket): statements on it are leases.
BUCKETS_TABLE = "rate_buckets"

VerifyMethod = Callable[..., Awaitable[Verified]]


class Counts:
    """What the process has done since it started; the bench reads differences."""

    def __init__(self) -> None:
        self.sql_statements = 0
        self.sql_flush = 0
        self.sql_lease = 0
        self.checkouts = 0
        self.verified = 0
        self.rate_limited = 0
        self.refused = 0
        self.gc_pause_us = 0
        self.gc_full_collections = 0
        self._gc_started = 0.0

    def collection(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: called at the start and the stop of every collection."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        self.gc_pause_us += round((time.perf_counter() - self._gc_started) * 1e6)
        if info["generation"] == len(gc.get_threshold()) - 1:
            self.gc_full_collections += 1

    def statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.sql_statements += 1
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop: not the app's
            task = None
        if task is not None and task.get_name() == FLUSHER_TASK:
            self.sql_flush += 1
        elif BUCKETS_TABLE in statement:
            self.sql_lease += 1

    def checkout(self, *_args: Any) -> None:
        self.checkouts += 1

    def counting(self, verify: VerifyMethod) -> VerifyMethod:
        """``verify``, counting its verdicts; whatever its signature, so that the counting is not
        what breaks when it grows."""

        @functools.wraps(verify)
        async def counted(*args: Any, **kwargs: Any) -> Verified:
            try:
                result = await verify(*args, **kwargs)
            except OverLimit:
                self.rate_limited += 1
                raise
            except Exception:
                self.refused += 1
                raise
            self.verified += 1
            return result

        return counted


COUNTS = Counts()


def _listen_once() -> None:
    # Class-level: every engine and pool of the process, including the one the lifespan creates.
    if not event.contains(Engine, "before_cursor_execute", COUNTS.statement):
        event.listen(Engine, "before_cursor_execute", COUNTS.statement)
    if not event.contains(Pool, "checkout", COUNTS.checkout):
        event.listen(Pool, "checkout", COUNTS.checkout)
    if COUNTS.collection not in gc.callbacks:
        gc.callbacks.append(COUNTS.collection)


def create() -> FastAPI:
    _listen_once()
    # No sessionmaker: the app owns its engine, listener and usage flusher, as in production.
    app = create_app(Settings())
    app_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        async with app_lifespan(app) as state:
            verifier: Verifier = app.state.verifier
            # An instance attribute shadows the method for every caller (the /verify fast path,
            # the route, forward-auth and the management API's authentication alike).
            setattr(verifier, "verify", COUNTS.counting(verifier.verify))  # noqa: B010
            yield state

    app.router.lifespan_context = lifespan

    async def counters() -> dict[str, int]:
        verifier: Verifier | None = getattr(app.state, "verifier", None)
        return {
            "sql_statements": COUNTS.sql_statements,
            "sql_flush": COUNTS.sql_flush,
            "sql_lease": COUNTS.sql_lease,
            "checkouts": COUNTS.checkouts,
            "verified": COUNTS.verified,
            "rate_limited": COUNTS.rate_limited,
            "refused": COUNTS.refused,
            "gc_pause_us": COUNTS.gc_pause_us,
            "gc_full_collections": COUNTS.gc_full_collections,
            "leases_taken": verifier.limiter.leases_taken if verifier is not None else 0,
            "cache_entries": len(app.state.key_cache),
        }

    app.add_api_route(COUNTERS_PATH, counters, methods=["GET"], include_in_schema=False)
    return app

"""The app as `make bench` serves it: keyservice's own app, plus counters that only the bench has.

bench/run.py starts it with uvicorn's factory mode (``uvicorn server:create --factory --app-dir
bench``) and configures it through the usual ``KEYSERVICE_*`` variables. It differs from a
production instance only in what it counts:

- every SQL statement the app's engine sends (SQLAlchemy's ``before_cursor_execute``), so that the
  bench can tell how many a verification costs;
- verifications, and those refused, so that a run whose key stopped verifying is not reported as a
  fast one (``POST /v1/verify`` answers 200 either way).

``GET /bench/counters`` returns them. Like the real app's lifespan, it listens for key
invalidations on PostgreSQL, so that the cache behaves as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.main import create_app
from keyservice.verification.cache import KeyCache, Listener
from keyservice.verification.verifier import Verified, Verifier

COUNTERS_PATH = "/bench/counters"


class StatementCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_args: Any) -> None:
        self.count += 1


class CountingVerifier(Verifier):
    """The real verifier, counting its verdicts."""

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], cache: KeyCache
    ) -> None:
        super().__init__(settings, sessionmaker, cache)
        self.verified = 0
        self.refused = 0

    # Whatever the real signature is: the counting must not be what breaks when it grows.
    async def verify(self, *args: Any, **kwargs: Any) -> Verified:
        try:
            result = await super().verify(*args, **kwargs)
        except Exception:
            self.refused += 1
            raise
        self.verified += 1
        return result


def create() -> FastAPI:
    settings = Settings()
    engine = create_engine(settings)
    statements = StatementCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", statements)
    sessionmaker = create_sessionmaker(engine)
    # With a sessionmaker the app leaves the engine (and the listener) to its caller: this module.
    app = create_app(settings, sessionmaker=sessionmaker)
    verifier = CountingVerifier(settings, sessionmaker, app.state.key_cache)
    app.state.verifier = verifier
    app_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        listener = (
            Listener(engine.url, app.state.key_cache)
            if engine.dialect.name == "postgresql"
            else None
        )
        try:
            if listener is not None:
                await listener.start()
            async with app_lifespan(app) as state:
                yield state
        finally:
            if listener is not None:
                await listener.stop()
            await engine.dispose()

    app.router.lifespan_context = lifespan

    async def counters() -> dict[str, int]:
        return {
            "sql_statements": statements.count,
            "verified": verifier.verified,
            "refused": verifier.refused,
        }

    app.add_api_route(COUNTERS_PATH, counters, methods=["GET"], include_in_schema=False)
    return app

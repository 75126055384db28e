"""The run's throw-away PostgreSQL database: created, migrated, filled, read, dropped."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import asyncpg
from cryptography.fernet import Fernet

from bench import BenchError
from keyservice import migrate
from keyservice.accounts import service as accounts_service
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.keys.service import new_key
from keyservice.models import Application, KeyKind
from keyservice.security import Environment

TIMEOUT = 60.0
P = ParamSpec("P")
T = TypeVar("T")


def blocking(function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """``function`` run to its end in an event loop of its own: the bench's driver blocks."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(asyncio.wait_for(function(*args, **kwargs), TIMEOUT))

    return run


@blocking
async def fetch(url: str, statement: str, *args: object) -> Any:
    """The first row of one statement's answer (an ``asyncpg.Record``), or None."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        connection = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {url.split('@')[-1]} ({exc}); set "
            "KEYSERVICE_BENCH_POSTGRES_URL"
        ) from None
    try:
        return await connection.fetchrow(statement, *args)
    finally:
        await connection.close()


@contextlib.contextmanager
def database(admin_url: str) -> Iterator[str]:
    """A new database on the server of ``admin_url`` (dropped afterwards): its URL."""
    name = f"keyservice_bench_{secrets.token_hex(6)}"
    fetch(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        fetch(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Production refuses to start without it (it encrypts webhook secrets): one for the bench's run.
ENCRYPTION_KEY = Fernet.generate_key().decode()


@blocking
async def prepare(url: str) -> str:
    """Migrate the database and bootstrap an account: its owner key."""
    settings = Settings(mode="production", database_url=url, encryption_key=ENCRYPTION_KEY)
    await migrate.upgrade(settings, url)
    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            _, _, owner_key = await accounts_service.bootstrap(
                session,
                account_name="Bench",
                owner_email="bench@example.com",
                password=None,
                key_prefix=settings.key_prefix,
            )
    finally:
        await engine.dispose()
    return owner_key


@blocking
async def create_keys(
    url: str, application_id: str, count: int, scopes: Sequence[str], rate_limit: dict[str, int]
) -> list[str]:
    """``count`` keys of an application, each with ``rate_limit``, written straight to the
    database with keyservice's own ``new_key``: thousands of keys in seconds rather than
    thousands of API calls. Their secrets, in order."""
    settings = Settings(mode="production", database_url=url, encryption_key=ENCRYPTION_KEY)
    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            application = await session.get(Application, uuid.UUID(application_id))
            assert application is not None
            secrets_ = []
            for number in range(count):
                key, secret = new_key(
                    prefix=settings.key_prefix,
                    kind=KeyKind.application,
                    name=f"Bench key {number + 1}",
                    environment=Environment.live,
                    scopes=scopes,
                    expires_at=None,
                    account_id=application.account_id,
                    application_id=application.id,
                )
                key.rate_limit = rate_limit["limit"]
                key.rate_period_seconds = rate_limit["period_seconds"]
                key.rate_burst = rate_limit["burst"]
                session.add(key)
                secrets_.append(secret)
    finally:
        await engine.dispose()
    return secrets_


def usage(url: str, key_id: str) -> tuple[int, int]:
    """A key's verifications as its instances' usage counters have them: allowed, refused."""
    statement = "SELECT sum(allowed), sum(refused) FROM usage_counters WHERE key_id = $1"
    allowed, refused = fetch(url, statement, uuid.UUID(key_id))
    return int(allowed or 0), int(refused or 0)

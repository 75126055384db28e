"""Test harness: every test runs on SQLite and on PostgreSQL, against a schema built by the
migrations, inside a transaction that is rolled back afterwards (SQLAlchemy's "joining a session
into an external transaction" recipe). No mocks of the database or of HTTP between our parts."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

import secrets_seen
from factories import Tenant, create_tenant
from keyservice import migrate, secretbox
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.main import create_app
from keyservice.models import utcnow
from keyservice.secretbox import Keyring
from keyservice.webhooks.delivery import Delivery
from keyservice.webhooks.ssrf import Policy
from pgcluster import Cluster, own_cluster
from receivers import Receiver

# The console's fixtures (signed-in clients, the browser) live beside the other helpers.
pytest_plugins = ("consoles",)

POSTGRES_URL = os.environ.get(
    "KEYSERVICE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _postgres_reachable() -> str | None:
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL), timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


class PostgresDatabases:
    """Creates throw-away databases on the test server and drops them at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []

    async def create(self) -> str:
        name = f"keyservice_test_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()
        self.created.append(name)
        return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"

    async def drop_all(self) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
        try:
            for name in self.created:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()


@pytest.fixture(scope="session")
async def postgres_databases() -> AsyncIterator[PostgresDatabases]:
    databases = PostgresDatabases()
    yield databases
    if databases.created:
        await databases.drop_all()


@pytest.fixture(scope="session")
def require_postgres() -> None:
    # A sync fixture runs while no event loop is running, so a loop of its own is fine here.
    problem = asyncio.run(_postgres_reachable())
    if problem is None:
        return
    message = (
        f"PostgreSQL is not reachable at {POSTGRES_URL.split('@')[-1]} ({problem}); "
        "set KEYSERVICE_TEST_POSTGRES_URL to run the PostgreSQL half of the suite"
    )
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def settings() -> Settings:
    # A key of the suite's own: development would otherwise write one beside ./keyservice.db.
    return Settings(
        _env_file=None, mode="development", database_url=None, encryption_key=secretbox.new_key()
    )


@pytest.fixture
async def fresh_database_url(
    backend: str, tmp_path: Path, postgres_databases: PostgresDatabases
) -> str:
    """A new, empty database of the current backend, for tests that need real commits."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    return await postgres_databases.create()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("require_postgres")
    return str(request.param)


@pytest.fixture(scope="session")
async def engine(
    backend: str,
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_databases: PostgresDatabases,
) -> AsyncIterator[AsyncEngine]:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    else:
        url = await postgres_databases.create()
    await migrate.upgrade(settings, url)
    engine = create_engine(settings, url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        transaction = await connection.begin()
        yield connection
        if transaction.is_active:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection,
        expire_on_commit=False,
        autoflush=False,
        join_transaction_mode="create_savepoint",
    )


@pytest.fixture
async def session(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def app(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> FastAPI:
    return create_app(settings, sessionmaker=sessionmaker)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.statements.append(statement)


@pytest.fixture
def sql_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements the test's code sends, in order."""
    counter = StatementCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    yield counter.statements
    event.remove(engine.sync_engine, "before_cursor_execute", counter)


@pytest.fixture
def make_app(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> Callable[..., FastAPI]:
    """An app on the test's transaction with some settings changed."""

    def make(**overrides: object) -> FastAPI:
        return create_app(settings.model_copy(update=overrides), sessionmaker=sessionmaker)

    return make


def client_for(app: FastAPI, address: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(
        transport=transport,
        base_url="http://keyservice.test",
        # Every secret sent or shown, for the check that no log line of the suite holds one.
        event_hooks={
            "request": [secrets_seen.on_request],
            "response": [secrets_seen.on_response],
        },
    )


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every log record of the whole suite (INFO and above) holds no secret the suite created
    (keys, passwords, tokens) and no key's start."""
    handler = secrets_seen.SuiteLog()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)
    if request.session.testscollected > 500:  # the whole suite, not a few tests picked
        assert len(handler.lines) > 1000, "the suite's log was not captured"
        assert secrets_seen.keys, "no secret was seen: the check would prove nothing"
    leaked = secrets_seen.leaks(handler.lines)
    assert not leaked, f"{len(leaked)} log lines hold a secret, the first: {leaked[0][:300]}"


# Instances that own their database, on a fresh PostgreSQL database: real commits, NOTIFY, and
# several instances side by side.
@pytest.fixture
async def postgres_url(
    require_postgres: None, postgres_databases: PostgresDatabases, settings: Settings
) -> str:
    url = await postgres_databases.create()
    await migrate.upgrade(settings, url)
    return url


@pytest.fixture
async def instances(
    postgres_url: str, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI]]:
    # A long TTL, so that only an invalidation can explain a refusal.
    instance_settings = settings.model_copy(
        update={"database_url": postgres_url, "cache_ttl_seconds": 3600.0}
    )
    first, second = create_app(instance_settings), create_app(instance_settings)
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        client_for(first) as a,
        client_for(second) as b,
    ):
        yield a, b, second


@pytest.fixture
async def tenant(postgres_url: str, settings: Settings) -> Tenant:
    engine = create_engine(settings, postgres_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await create_tenant(session)
    finally:
        await engine.dispose()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of the test's own, which it may stop and start."""
    with own_cluster(required=IN_CI) as started:
        yield started


# Webhook delivery: a worker on the test's transaction, its clock moved at will, and a real
# receiver.
class Clock:
    """The real time, moved forward at will."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_delivery(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    jitter: float = 0.0,
    policy: Policy | None = None,
) -> Delivery:
    key = settings.encryption_key
    assert key is not None
    return Delivery(
        sessionmaker,
        settings,
        keyring=Keyring(key.get_secret_value(), development_path=None),
        policy=policy or Policy.of(settings),
        clock=clock,
        jitter=lambda: jitter,
    )


@pytest.fixture
async def delivery(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock
) -> AsyncIterator[Delivery]:
    worker = make_delivery(sessionmaker, settings, clock)
    yield worker
    await worker.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as started:
        yield started

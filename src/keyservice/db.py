"""Engine and session factories, and the per-request session dependency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import (
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from keyservice.availability import Availability
from keyservice.config import Settings
from keyservice.invalidations import apply_committed, discard_pending


def _configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; SQLAlchemy's documented
    # recipe takes it over so that SQLite transactions behave like Postgres'.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Migrations run with foreign keys off: batch mode recreates tables, and dropping a
        # referenced table with them on would cascade.
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
        # writes fails at once with "database is locked" when another writer got there first,
        # where this one waits (busy_timeout) its turn.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(
    settings: Settings, url: str | None = None, *, for_migrations: bool = False
) -> AsyncEngine:
    url = url or settings.effective_database_url
    if url.startswith("sqlite"):
        engine = create_async_engine(url, hide_parameters=True)
        _configure_sqlite(engine, foreign_keys=not for_migrations)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        # Short statements only: compiling them to machine code (for any that PostgreSQL deems
        # costly, such as asyncpg's type introspection on a new connection) costs more than it
        # saves.
        connect_args={
            "server_settings": {"jit": "off"},
            # An unreachable database is an outage to report, not a minute to wait.
            "timeout": settings.db_connect_timeout_seconds,
        },
        # Parameters (password hashes, key hashes, emails) stay out of logged errors.
        hide_parameters=True,
    )


def upsert(session: AsyncSession, table: Any) -> Any:
    """``INSERT ... ON CONFLICT`` for the session's backend (both dialects share the API)."""
    return dialect_upsert(session.get_bind().dialect.name, table)


def dialect_upsert(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT`` for a backend by name, for statements built once per backend."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed before the response is sent, rolled back on error."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    availability: Availability = request.app.state.availability
    if availability.down:
        # Known to be unreachable: a clean 503 at once, rather than a wait for a connection.
        raise availability.error()
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            discard_pending(session)
            await session.rollback()
            raise
        else:
            await session.commit()
            # This instance forgets changed keys now; the others learn through NOTIFY.
            apply_committed(session, request.app.state.key_cache)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

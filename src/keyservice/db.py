"""Engine and session factories, and the per-request session dependency."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import FromClause, String, bindparam, cast, column, event, func, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from keyservice.config import Settings
from keyservice.verification.cache import apply_committed, discard_pending


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
        connect_args={"server_settings": {"jit": "off"}},
        # Parameters (password hashes, key hashes, emails) stay out of logged errors.
        hide_parameters=True,
    )


def upsert(session: AsyncSession, table: Any) -> Any:
    """``INSERT ... ON CONFLICT`` for the session's backend (both dialects share the API)."""
    return dialect_upsert(session.get_bind().dialect.name, table)


def dialect_upsert(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT`` for a backend by name, for statements built once per backend."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


class JsonRows:
    """Many rows as one JSON parameter, read back as a table in SQL: one fixed statement, compiled
    and prepared once, takes any number of rows (PostgreSQL ``json_to_recordset``, SQLite
    ``json_each``). Values are stored as each backend stores them: UUIDs as hex, times in UTC."""

    def __init__(self, dialect: str, columns: Mapping[str, Any], *, name: str, param: str) -> None:
        self.postgres = dialect == "postgresql"
        self.columns = dict(columns)
        self.name = name
        self.param = param

    def table(self) -> FromClause:
        rows = bindparam(self.param, type_=String)
        if self.postgres:
            return (
                func.json_to_recordset(cast(rows, postgresql.JSON))
                .table_valued(*(column(name, type_) for name, type_ in self.columns.items()))
                .render_derived(name=self.name, with_types=True)
            )
        items = func.json_each(rows).table_valued("value").alias(f"{self.name}_item")
        return select(
            *(
                type_coerce(func.json_extract(items.c.value, f"$.{name}"), type_).label(name)
                for name, type_ in self.columns.items()
            )
        ).subquery(self.name)

    def _value(self, value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return value.hex
        if isinstance(value, datetime):
            value = value.astimezone(UTC)
            if self.postgres:
                return value.isoformat()
            # As SQLAlchemy's SQLite DATETIME stores it, so that equal times compare equal.
            return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return value

    def bind(self, rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """The statement's parameter for ``rows``."""
        encoded = [{name: self._value(row[name]) for name in self.columns} for row in rows]
        return {self.param: json.dumps(encoded)}


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed before the response is sent, rolled back on error."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
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

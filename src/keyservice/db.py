"""Engine and session factories, and the per-request session dependency."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import (
    ColumnElement,
    DateTime,
    FromClause,
    String,
    TypeDecorator,
    Uuid,
    bindparam,
    cast,
    event,
    func,
    literal_column,
    select,
    type_coerce,
)
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
    and prepared once, takes any number of rows (PostgreSQL ``json_array_elements``, SQLite
    ``json_each``).

    Rows are tuples in the columns' order, sent as JSON arrays; values are stored as each backend
    stores them: UUIDs as hex, times in UTC. A time is encoded once per call however many rows
    share it (a flush's rows share their hour). JSON rather than PostgreSQL arrays: ``unnest``
    estimates its rows from the arrays' length, which makes PostgreSQL plan such statements anew
    on every execution, each plan costing more than running the statement."""

    def __init__(self, dialect: str, columns: Mapping[str, Any], *, name: str, param: str) -> None:
        self.postgres = dialect == "postgresql"
        self.columns = dict(columns)
        self.name = name
        self.param = param
        types = [type_() if isinstance(type_, type) else type_ for type_ in self.columns.values()]
        self._uuids = [i for i, type_ in enumerate(types) if isinstance(_impl(type_), Uuid)]
        self._times = [i for i, type_ in enumerate(types) if isinstance(_impl(type_), DateTime)]

    def table(self) -> FromClause:
        rows = bindparam(self.param, type_=String)
        values: list[ColumnElement[Any]]
        if self.postgres:
            elements = func.json_array_elements(cast(rows, postgresql.JSON))
            row = elements.table_valued("value").alias(f"{self.name}_row")
            values = [
                cast(row.c.value.op("->>")(literal_column(str(i))), t)
                for i, t in enumerate(self.columns.values())
            ]
        else:
            row = func.json_each(rows).table_valued("value").alias(f"{self.name}_row")
            values = [
                type_coerce(func.json_extract(row.c.value, f"$[{i}]"), t)
                for i, t in enumerate(self.columns.values())
            ]
        return select(
            *(value.label(name) for value, name in zip(values, self.columns, strict=True))
        ).subquery(self.name)

    def bind(self, rows: Iterable[Sequence[Any]]) -> dict[str, str]:
        """The statement's parameter for ``rows``."""
        times: dict[datetime, str] = {}
        encoded = []
        for row in rows:
            values = list(row)
            for i in self._uuids:
                if values[i] is not None:
                    values[i] = values[i].hex
            for i in self._times:
                at = values[i]
                if at is not None:
                    if at not in times:
                        times[at] = self._time(at)
                    values[i] = times[at]
            encoded.append(values)
        return {self.param: json.dumps(encoded)}

    def _time(self, value: datetime) -> str:
        value = value.astimezone(UTC)
        if self.postgres:
            return value.isoformat()
        # As SQLAlchemy's SQLite DATETIME stores it, so that equal times compare equal.
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _impl(type_: Any) -> Any:
    """The type a decorated type stores as."""
    return type_.impl_instance if isinstance(type_, TypeDecorator) else type_


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

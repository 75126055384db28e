"""The migrations build the schema the models describe, and undo it, on both backends."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from keyservice import migrate
from keyservice.config import Settings
from keyservice.db import create_engine
from keyservice.models import Base

TABLES = {
    "accounts",
    "users",
    "memberships",
    "applications",
    "api_keys",
    "audit_events",
    "login_throttles",
    "rate_buckets",
    "usage_counters",
    "usage_account_hours",
    "usage_key_days",
    "events",
    "webhook_endpoints",
    "webhook_messages",
    "webhook_attempts",
    "email_messages",
}


async def _tables(settings: Settings, url: str) -> set[str]:
    engine = create_engine(settings, url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: inspect(c).get_table_names())
            return set(names) - {"alembic_version"}
    finally:
        await engine.dispose()


async def test_upgrade_downgrade_upgrade(settings: Settings, fresh_database_url: str) -> None:
    await migrate.upgrade(settings, fresh_database_url)
    assert await _tables(settings, fresh_database_url) == TABLES
    await migrate.downgrade(settings, fresh_database_url)
    assert await _tables(settings, fresh_database_url) == set()
    await migrate.upgrade(settings, fresh_database_url)
    assert await _tables(settings, fresh_database_url) == TABLES


async def test_models_and_migrations_agree(settings: Settings, fresh_database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    await migrate.upgrade(settings, fresh_database_url)
    engine = create_engine(settings, fresh_database_url)

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


def test_migrations_have_a_single_head() -> None:
    from alembic.script import ScriptDirectory

    assert len(ScriptDirectory.from_config(migrate.alembic_config()).get_heads()) == 1

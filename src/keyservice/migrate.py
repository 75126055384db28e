"""Apply the Alembic migrations from code: the CLI, `make run` and the tests all go through here."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from keyservice.config import Settings
from keyservice.db import create_engine


def migrations_dir() -> Path:
    packaged = Path(__file__).parent / "migrations"  # in a built wheel
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"  # a source checkout


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _run(settings: Settings, url: str | None, action: str, revision: str) -> None:
    engine = create_engine(settings, url, for_migrations=True)
    config = alembic_config()

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def upgrade(settings: Settings, url: str | None = None, revision: str = "head") -> None:
    await _run(settings, url, "upgrade", revision)


async def downgrade(settings: Settings, url: str | None = None, revision: str = "base") -> None:
    await _run(settings, url, "downgrade", revision)


async def current_revision(connection: AsyncConnection) -> str | None:
    def read(sync_connection: Connection) -> str | None:
        return MigrationContext.configure(sync_connection).get_current_revision()

    return await connection.run_sync(read)

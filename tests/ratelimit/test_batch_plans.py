"""Statements fed many rows at once (leases, lookups, usage flushes) reach their rows through the
indexes, whatever the number of keys: a batch of a dozen keys must not read every key's row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from factories import create_personal_keys, create_tenant
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.ratelimit import buckets
from keyservice.usage import recorder
from keyservice.verification import service

KEYS = 3000


def _lease(key_id: uuid.UUID, *, create: bool = False) -> buckets.LeaseRequest:
    return buckets.LeaseRequest(
        key_id=key_id,
        cost=1,
        want=10,
        burst=100.0,
        rate=100.0,
        window_ms=100,
        long_window_ms=30_000,
        long=False,
        quota=None,
        create=create,
    )


async def test_batches_go_through_the_indexes(postgres_url: str, settings: Settings) -> None:
    engine = create_engine(settings, postgres_url)
    try:
        async with create_sessionmaker(engine)() as session:
            tenant = await create_tenant(session)
            keys = await create_personal_keys(session, tenant.owner, KEYS)
            ids = [key.id for key in keys]
            for start in range(0, KEYS, buckets.MAX_BATCH):
                chunk = ids[start : start + buckets.MAX_BATCH]
                await buckets.lease(session, [_lease(key_id, create=True) for key_id in chunk])
            await session.execute(text("ANALYZE"))
            await session.commit()
        now = datetime.now(UTC)
        few = ids[:12]
        statements: list[tuple[Any, dict[str, str]]] = [
            (
                buckets._lease_statement("postgresql"),
                buckets._requests("postgresql").bind(_lease(k).row() for k in few),
            ),
            (
                buckets._create_statement("postgresql"),
                buckets._requests("postgresql").bind(_lease(k).row() for k in few),
            ),
            (
                service._lookup_statement("postgresql"),
                service._presented("postgresql").bind((key.key_hash,) for key in keys[:12]),
            ),
            (
                recorder._count_statement("postgresql"),
                recorder._counts("postgresql").bind(
                    (k, tenant.account.id, "GET /x", now, 1, 0, 0) for k in few
                ),
            ),
            (
                recorder._touch_statement("postgresql"),
                recorder._touches("postgresql").bind((k, now) for k in few),
            ),
        ]
        async with engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            # As a prepared statement is run once PostgreSQL settles on one plan for it.
            await driver.execute("SET plan_cache_mode = force_generic_plan")
            for statement, params in statements:
                compiled = statement.compile(dialect=engine.dialect)
                values = compiled.construct_params(params)
                prepared = await driver.prepare(f"EXPLAIN {compiled}")
                plan = "\n".join(
                    row[0]
                    for row in await prepared.fetch(
                        *(values[name] for name in compiled.positiontup or ())
                    )
                )
                for table in ("rate_buckets", "api_keys", "usage_counters"):
                    assert f"Seq Scan on {table}" not in plan, plan
    finally:
        await engine.dispose()

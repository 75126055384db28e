"""The rollups that usage pages read agree with the counters they are written with."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import create_personal_keys, create_tenant
from keyservice.config import Settings
from keyservice.migrate import downgrade, upgrade
from keyservice.models import UsageAccountHour, UsageCounter, UsageKeyDay
from keyservice.usage.recorder import UsageRecorder

NOW = datetime(2026, 11, 21, 10, 30, 5, tzinfo=UTC)


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession],
    at: datetime,
    uses: list[tuple[uuid.UUID, uuid.UUID, str, bool]],
) -> None:
    recorder = UsageRecorder(sessionmaker, max_endpoints=5, clock=lambda: at)
    for key_id, account_id, endpoint, allowed in uses:
        recorder.record(key_id, account_id, endpoint, allowed=allowed)
    await recorder.flush()


async def _totals(session: AsyncSession, model: type, account_id: uuid.UUID) -> tuple[int, int]:
    row = (
        await session.execute(
            select(func.sum(model.allowed), func.sum(model.refused)).where(  # type: ignore[attr-defined]
                model.account_id == account_id  # type: ignore[attr-defined]
            )
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


async def test_every_flush_adds_to_the_rollups_what_it_adds_to_the_counters(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    tenant = await create_tenant(session)
    first, second = await create_personal_keys(session, tenant.owner, 2)
    account = tenant.account.id
    # Two hours of one day, and the next day; two flushes of the same hour add up.
    for at in (NOW, NOW, NOW + timedelta(hours=1), NOW + timedelta(days=1)):
        await _record(
            sessionmaker,
            at,
            [
                (first.id, account, "GET /contacts", True),
                (first.id, account, "POST /deals", False),
                (second.id, account, "GET /contacts", True),
            ],
        )
    assert await _totals(session, UsageCounter, account) == (8, 4)
    assert await _totals(session, UsageAccountHour, account) == (8, 4)
    assert await _totals(session, UsageKeyDay, account) == (8, 4)
    hours = await session.execute(
        select(UsageAccountHour.hour, UsageAccountHour.endpoint, UsageAccountHour.allowed)
        .where(UsageAccountHour.account_id == account)
        .order_by(UsageAccountHour.hour, UsageAccountHour.endpoint)
    )
    hour = NOW.replace(minute=0, second=0)
    assert (hour, "GET /contacts", 4) in [tuple(r) for r in hours.all()]
    days = await session.execute(
        select(UsageKeyDay.key_id, UsageKeyDay.day, UsageKeyDay.allowed, UsageKeyDay.refused)
        .where(UsageKeyDay.key_id == first.id)
        .order_by(UsageKeyDay.day)
    )
    day = NOW.replace(hour=0, minute=0, second=0)
    assert [tuple(r) for r in days.all()] == [
        (first.id, day, 3, 3),
        (first.id, day + timedelta(days=1), 1, 1),
    ]


async def test_the_account_page_and_the_keys_counters_tell_the_same_story(
    client: httpx.AsyncClient, session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    tenant = await create_tenant(session)
    keys = await create_personal_keys(session, tenant.owner, 3)
    now = datetime.now(UTC)
    for n, key in enumerate(keys):
        await _record(
            sessionmaker,
            now - timedelta(days=n),
            [(key.id, tenant.account.id, "GET /contacts", True)] * (n + 1),
        )
    by_day = (
        await client.get("/v1/usage", params={"granularity": "day"}, headers=tenant.headers)
    ).json()
    assert sum(p["allowed"] for p in by_day["series"]["points"]) == 6
    # The busiest keys over 30 whole days come from the daily rollup, busiest first.
    assert [k["key_id"] for k in by_day["top_keys"]] == [str(k.id) for k in reversed(keys)]
    assert [k["allowed"] for k in by_day["top_keys"]] == [3, 2, 1]
    by_hour = (await client.get("/v1/usage", headers=tenant.headers)).json()
    # The last 24 hours: the first key's use only (the others are a day and more ago).
    assert [k["allowed"] for k in by_hour["top_keys"]] == [1]
    assert by_hour["top_endpoints"] == [
        {"endpoint": "GET /contacts", "allowed": 1, "refused": 0, "rate_limited": 0}
    ]


async def test_the_migration_rolls_up_the_counters_already_written(
    settings: Settings, fresh_database_url: str
) -> None:
    from keyservice.db import create_engine, create_sessionmaker

    await upgrade(settings, fresh_database_url)
    engine = create_engine(settings, fresh_database_url)
    try:
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            tenant = await create_tenant(session)
            first, second = await create_personal_keys(session, tenant.owner, 2)
            for at in (NOW, NOW + timedelta(hours=2), NOW + timedelta(days=3)):
                await _record(
                    sessionmaker,
                    at,
                    [
                        (first.id, tenant.account.id, "GET /a", True),
                        (second.id, tenant.account.id, "GET /b", False),
                    ],
                )
        # Back to before the rollups, and up again: they are rebuilt from the counters.
        await downgrade(settings, fresh_database_url, "b626934c5db8")
        await upgrade(settings, fresh_database_url)
        async with sessionmaker() as session:
            account = tenant.account.id
            assert await _totals(session, UsageAccountHour, account) == (3, 3)
            assert await _totals(session, UsageKeyDay, account) == (3, 3)
            days = (
                await session.scalars(
                    select(UsageKeyDay.day)
                    .where(UsageKeyDay.key_id == first.id)
                    .order_by(UsageKeyDay.day)
                )
            ).all()
            day = NOW.replace(hour=0, minute=0, second=0)
            assert days == [day, day + timedelta(days=3)]
    finally:
        await engine.dispose()

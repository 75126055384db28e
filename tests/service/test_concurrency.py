"""Concurrent requests on an instance that owns its database (real commits, real connections)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from conftest import client_for
from factories import Tenant, create_application, create_key, create_tenant
from keyservice import migrate
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.main import GC_YOUNG_THRESHOLD, create_app


@pytest.fixture
async def live(
    fresh_database_url: str, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant]]:
    await migrate.upgrade(settings, fresh_database_url)
    engine = create_engine(settings, fresh_database_url)
    async with create_sessionmaker(engine)() as session:
        tenant = await create_tenant(session)
    await engine.dispose()
    app: FastAPI = create_app(settings.model_copy(update={"database_url": fresh_database_url}))
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield client, tenant


async def test_concurrent_writes_all_succeed(live: tuple[httpx.AsyncClient, Tenant]) -> None:
    client, tenant = live
    responses = await asyncio.gather(
        *(
            client.patch("/v1/account", headers=tenant.headers, json={"name": f"Name {n}"})
            for n in range(6)
        )
    )
    assert [r.status_code for r in responses] == [200] * 6


async def test_concurrent_adds_of_one_email_are_one_success_and_conflicts(
    live: tuple[httpx.AsyncClient, Tenant],
) -> None:
    client, tenant = live
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/account/members", headers=tenant.headers, json={"email": "race@example.com"}
            )
            for _ in range(4)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 201
    assert set(statuses[1:]) <= {201, 409}
    members = (await client.get("/v1/account/members", headers=tenant.headers)).json()["data"]
    assert [m["email"] for m in members].count("race@example.com") == 1


async def test_concurrent_revocations_are_audited_once(
    live: tuple[httpx.AsyncClient, Tenant],
) -> None:
    client, tenant = live
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"])
    responses = await asyncio.gather(
        *(client.post(f"/v1/keys/{key['id']}/revoke", headers=tenant.headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {200}
    events = (
        await client.get(
            "/v1/audit-events", params={"action": "key.revoked"}, headers=tenant.headers
        )
    ).json()["data"]
    assert len(events) == 1


def test_errors_never_log_sql_parameters(settings: Settings) -> None:
    for url in ("sqlite+aiosqlite:///:memory:", "postgresql+asyncpg://u@127.0.0.1/db"):
        engine: AsyncEngine = create_engine(settings, url)
        assert engine.sync_engine.hide_parameters


async def test_serving_collects_garbage_less_often_and_undoes_it_at_shutdown(
    fresh_database_url: str, settings: Settings
) -> None:
    """Full collections traverse every object the process keeps: while serving, what startup
    built is out of their reach and they come rarely; a process that goes on (tests, an embedding
    app) gets its collector back as it was once the last app serving in it stops."""
    await migrate.upgrade(settings, fresh_database_url)
    threshold = gc.get_threshold()
    instance = settings.model_copy(update={"database_url": fresh_database_url})
    first, second = create_app(instance), create_app(instance)
    async with first.router.lifespan_context(first):
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        assert gc.get_freeze_count() > 0
        async with second.router.lifespan_context(second):
            pass
        # The other app still serves: tuned as it was.
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == threshold
    assert gc.get_freeze_count() == 0

"""A graceful stop under load loses no count: the last flush happens on shutdown."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from conftest import client_for
from factories import create_application, create_key, create_tenant
from keyservice import migrate
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.main import create_app
from keyservice.models import ApiKey, UsageCounter
from keyservice.usage.recorder import UsageRecorder


async def test_stopping_under_load_loses_no_count(
    fresh_database_url: str, settings: Settings
) -> None:
    await migrate.upgrade(settings, fresh_database_url)
    engine = create_engine(settings, fresh_database_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        tenant = await create_tenant(session)
    app = create_app(
        settings.model_copy(update={"database_url": fresh_database_url, "usage_flush_seconds": 0.2})
    )
    stop = asyncio.Event()
    answered = 0

    async def client_loop(client: httpx.AsyncClient, key: str, n: int) -> None:
        nonlocal answered
        while not stop.is_set():
            response = await client.post(
                "/v1/verify", json={"key": key, "endpoint": f"GET /e{n % 3}"}
            )
            assert response.json()["code"] == "VALID"
            answered += 1
            # A cached verification never waits on anything; a real client waits on the network.
            await asyncio.sleep(0)

    async with app.router.lifespan_context(app), client_for(app) as client:
        application = await create_application(client, tenant)
        key = (await create_key(client, tenant, application["id"]))["key"]
        load = [asyncio.create_task(client_loop(client, key, n)) for n in range(6)]
        await asyncio.sleep(0.7)  # several periodic flushes happen meanwhile
        # A graceful stop: no new requests, the ones in flight finish, then the app shuts down.
        stop.set()
        await asyncio.gather(*load)
    # create_application and create_key were counted too (the owner key's management calls).
    async with sessionmaker() as session:
        verify_counts = await session.scalar(
            select(func.sum(UsageCounter.allowed)).where(UsageCounter.endpoint.like("GET /e%"))
        )
    await engine.dispose()
    assert answered > 50
    assert verify_counts == answered


async def test_stopping_while_flushes_run_back_to_back_loses_nothing(
    fresh_database_url: str, settings: Settings
) -> None:
    """Shutdown lands in the middle of a flush: it must wait for it, not cut it short."""
    await migrate.upgrade(settings, fresh_database_url)
    engine = create_engine(settings, fresh_database_url)
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker() as session:
        tenant = await create_tenant(session)
        key_id = (
            await session.scalars(select(ApiKey.id).where(ApiKey.user_id == tenant.owner.id))
        ).one()
    recorder = UsageRecorder(sessionmaker, max_endpoints=50)
    await recorder.start(interval=0.001)  # flushing all the time
    recorded = 0
    for _ in range(40):
        for _ in range(5):
            recorder.record(key_id, tenant.account.id, "GET /x", allowed=True)
            recorded += 1
        await asyncio.sleep(0.002)
    await recorder.stop()
    async with sessionmaker() as session:
        counted = await session.scalar(
            select(func.sum(UsageCounter.allowed)).where(UsageCounter.endpoint == "GET /x")
        )
    await engine.dispose()
    assert counted == recorded

"""Two independent instances (own engines, own caches) on one PostgreSQL: a change made through
one is refused by the other within a second, through LISTEN/NOTIFY, not after a TTL."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
from fastapi import FastAPI

from factories import Tenant, auth, create_application, create_key


async def _refused_within(client: httpx.AsyncClient, key: str, code: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < 5:
        result = (await client.post("/v1/verify", json={"key": key})).json()
        if result["code"] == code:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"still {result['code']} after 5 s")


async def test_revocation_reaches_the_other_instance_within_a_second(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI], tenant: Tenant
) -> None:
    a, b, second = instances
    application = await create_application(a, tenant)
    created = await create_key(a, tenant, application["id"])
    # The new key verifies at once on the other instance too.
    assert (await b.post("/v1/verify", json={"key": created["key"]})).json()["code"] == "VALID"
    assert len(second.state.key_cache) >= 1

    response = await a.post(f"/v1/keys/{created['id']}/revoke", headers=tenant.headers)
    assert response.status_code == 200
    assert await _refused_within(b, created["key"], "REVOKED") < 1.0


async def test_rotation_and_deletion_reach_the_other_instance(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI], tenant: Tenant
) -> None:
    a, b, _ = instances
    application = await create_application(a, tenant)
    rotated = await create_key(a, tenant, application["id"])
    deleted_app = await create_application(a, tenant, name="Doomed")
    deleted = await create_key(a, tenant, deleted_app["id"])
    for key in (rotated, deleted):
        assert (await b.post("/v1/verify", json={"key": key["key"]})).json()["code"] == "VALID"
    # The owner key is cached on b as well, through the management API.
    assert (await b.get("/v1/account", headers=tenant.headers)).status_code == 200

    await a.post(f"/v1/keys/{rotated['id']}/rotate", headers=tenant.headers)
    await a.delete(f"/v1/applications/{deleted_app['id']}", headers=tenant.headers)
    assert await _refused_within(b, rotated["key"], "NOT_FOUND") < 1.0
    assert await _refused_within(b, deleted["key"], "NOT_FOUND") < 1.0

    owner_key = (await a.get("/v1/users/me/keys", headers=tenant.headers)).json()["data"][0]
    await a.post(f"/v1/users/me/keys/{owner_key['id']}/revoke", headers=tenant.headers)
    started = time.monotonic()
    while (await b.get("/v1/account", headers=auth(tenant.owner_key))).status_code == 200:
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.01)


async def test_a_lost_listener_stops_the_cache_at_once(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI],
    tenant: Tenant,
    postgres_url: str,
) -> None:
    a, b, second = instances
    application = await create_application(a, tenant)
    created = await create_key(a, tenant, application["id"])
    assert (await b.post("/v1/verify", json={"key": created["key"]})).json()["code"] == "VALID"
    # The database drops every listening connection (a failover, an idle-session killer...).
    killer = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    # Within moments, not at the next ping: nothing is served from a cache that cannot hear.
    started = time.monotonic()
    while second.state.key_cache.enabled and time.monotonic() - started < 1.0:
        await asyncio.sleep(0.01)
    # Either still reconnecting (suspended, nothing cached) or back (everything forgotten).
    assert not second.state.key_cache.enabled or len(second.state.key_cache) == 0
    await a.post(f"/v1/keys/{created['id']}/revoke", headers=tenant.headers)
    assert await _refused_within(b, created["key"], "REVOKED") < 1.0

"""The verification cache: no SQL on a hit, and never a stale answer after a committed change."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from factories import (
    auth,
    create_application,
    create_key,
    create_personal_key,
    create_tenant,
    create_user,
    key_record,
)
from keyservice.invalidations import Target
from keyservice.models import KeyKind, Role
from keyservice.security import Environment, generate_key
from keyservice.verification.cache import KeyCache


async def _code(client: httpx.AsyncClient, key: str, **body: object) -> object:
    return (await client.post("/v1/verify", json={"key": key, **body})).json()["code"]


async def test_a_cached_key_costs_no_sql(
    client: httpx.AsyncClient, session: AsyncSession, sql_statements: list[str]
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    assert await _code(client, created["key"]) == "VALID"
    sql_statements.clear()
    for _ in range(50):
        assert await _code(client, created["key"], scopes=["contacts:read"]) == "VALID"
        assert await _code(client, created["key"], scopes=["deals:write"]) == "INSUFFICIENT_SCOPE"
    response = await client.get("/v1/forward-auth", headers=auth(created["key"]))
    assert response.status_code == 200
    assert sql_statements == []


async def test_a_new_key_verifies_at_once(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    # Unknown keys are not remembered: a lookup that found nothing does not hide a new key.
    for _ in range(3):
        assert await _code(client, generate_key("ks", Environment.live)) == "NOT_FOUND"
    created = await create_key(client, tenant, application["id"])
    assert await _code(client, created["key"]) == "VALID"


async def test_changes_reach_the_cache_as_soon_as_they_commit(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["contacts:read", "deals:read"]
    )
    revoked = await create_key(client, tenant, application["id"])
    renamed = await create_key(client, tenant, application["id"], scopes=["deals:read"])
    other = await create_application(client, tenant, name="Other")
    deleted = await create_key(client, tenant, other["id"])
    member = await create_user(session, accounts={tenant.account.id: Role.admin})
    personal = await create_personal_key(session, member, scopes=["deals:*"])
    for key in (revoked, renamed, deleted):
        assert await _code(client, key["key"]) == "VALID"
    assert await _code(client, personal, scopes=["deals:write"]) == "VALID"

    await client.post(f"/v1/keys/{revoked['id']}/revoke", headers=tenant.headers)
    assert await _code(client, revoked["key"]) == "REVOKED"

    await client.patch(f"/v1/keys/{renamed['id']}", headers=tenant.headers, json={"name": "New"})
    result = (await client.post("/v1/verify", json={"key": renamed["key"]})).json()
    assert result["key"]["name"] == "New"

    await client.patch(
        f"/v1/applications/{application['id']}",
        headers=tenant.headers,
        json={"permissions": ["contacts:read"]},
    )
    assert await _code(client, renamed["key"], scopes=["deals:read"]) == "INSUFFICIENT_SCOPE"

    await client.delete(f"/v1/applications/{other['id']}", headers=tenant.headers)
    assert await _code(client, deleted["key"]) == "NOT_FOUND"

    path = f"/v1/account/members/{member.id}"
    await client.patch(path, headers=tenant.headers, json={"role": "member"})
    assert await _code(client, personal, scopes=["deals:write"]) == "INSUFFICIENT_SCOPE"
    assert await _code(client, personal, scopes=["deals:read"]) == "VALID"
    await client.delete(path, headers=tenant.headers)
    assert await _code(client, personal) == "ACCOUNT_FORBIDDEN"


async def test_a_failed_change_invalidates_nothing(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    assert await _code(client, created["key"]) == "VALID"
    cache: KeyCache = app.state.key_cache
    size = len(cache)
    response = await client.patch(
        f"/v1/account/members/{tenant.owner.id}", headers=tenant.headers, json={"role": "member"}
    )
    assert response.status_code == 409  # the last owner
    assert len(cache) == size


def test_a_lookup_that_raced_an_invalidation_is_not_stored() -> None:
    cache = KeyCache(max_entries=10, ttl_seconds=60)
    record = key_record()
    generation = cache.generation  # the lookup starts and reads the row...
    cache.invalidate(Target("key", record.id))  # ...the row changes and the change commits...
    cache.put(record.key_hash, record, generation=generation)  # ...the stale read comes back
    assert cache.get(record.key_hash) is None
    cache.put(record.key_hash, record, generation=cache.generation)
    assert cache.get(record.key_hash) is record


def test_bounded_lru_with_ttl() -> None:
    now = [0.0]
    cache = KeyCache(max_entries=3, ttl_seconds=10, clock=lambda: now[0])
    records = [key_record() for _ in range(4)]
    for record in records[:3]:
        cache.put(record.key_hash, record, generation=cache.generation)
    assert cache.get(records[0].key_hash) is records[0]  # now the most recently used
    cache.put(records[3].key_hash, records[3], generation=cache.generation)
    assert len(cache) == 3
    assert cache.get(records[1].key_hash) is None  # the least recently used went
    assert cache.get(records[0].key_hash) is records[0]
    now[0] = 10.0
    assert cache.get(records[0].key_hash) is None
    assert len(cache) == 2


def test_invalidation_by_application_and_user() -> None:
    cache = KeyCache(max_entries=10, ttl_seconds=60)
    app_key = key_record()
    user_key = key_record(
        kind=KeyKind.personal, application_id=None, account_id=None, user_id=uuid.uuid4()
    )
    for record in (app_key, user_key):
        cache.put(record.key_hash, record, generation=cache.generation)
    cache.invalidate(Target("application", app_key.application_id))  # type: ignore[arg-type]
    assert cache.get(app_key.key_hash) is None
    assert cache.get(user_key.key_hash) is user_key
    cache.invalidate(Target("user", user_key.user_id))  # type: ignore[arg-type]
    assert len(cache) == 0


def test_a_suspended_cache_stores_nothing() -> None:
    cache = KeyCache(max_entries=10, ttl_seconds=60)
    record = key_record()
    cache.put(record.key_hash, record, generation=cache.generation)
    cache.suspend()
    assert cache.get(record.key_hash) is None
    cache.put(record.key_hash, record, generation=cache.generation)
    assert cache.get(record.key_hash) is None
    cache.resume()
    cache.put(record.key_hash, record, generation=cache.generation)
    assert cache.get(record.key_hash) is record

"""Issuing keys: expiry, scopes, listing with filters and pages, renaming, revoking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_application, create_key, create_tenant
from keyservice.models import ApiKey, utcnow


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.parametrize(("preset", "days"), [("30d", 30), ("90d", 90), ("180d", 180)])
async def test_expiry_presets(
    client: httpx.AsyncClient, session: AsyncSession, preset: str, days: int
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    before = datetime.now(UTC)
    key = await create_key(client, tenant, application["id"], expires_in=preset)
    expected = before + timedelta(days=days)
    assert abs(_at(key["expires_at"]) - expected) < timedelta(minutes=1)


async def test_no_expiry_by_default_or_never(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    assert (await create_key(client, tenant, application["id"]))["expires_at"] is None
    never = await create_key(client, tenant, application["id"], expires_in="never")
    assert never["expires_at"] is None


async def test_explicit_expiry(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    when = "2031-06-01T12:00:00+02:00"
    key = await create_key(client, tenant, application["id"], expires_at=when)
    assert _at(key["expires_at"]) == datetime(2031, 6, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"expires_at": "2031-06-01T12:00:00"},
        {"expires_in": "7d"},
        {"expires_in": "30d", "expires_at": "2031-06-01T12:00:00Z"},
        {"environment": "prod"},
        {"name": ""},
        {"name": "x" * 201},
        {"scopes": ["contacts:read"] * 101},
        {"unexpected": True},
    ],
    ids=[
        "past",
        "naive",
        "preset",
        "both",
        "environment",
        "empty-name",
        "long-name",
        "many-scopes",
        "extra-field",
    ],
)
async def test_invalid_key_requests_are_422(
    client: httpx.AsyncClient, session: AsyncSession, body: dict[str, object]
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    response = await client.post(
        f"/v1/applications/{application['id']}/keys",
        headers=tenant.headers,
        json={"name": "k", "scopes": ["contacts:read"]} | body,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:keyservice:problem:validation-error"
    assert response.json()["errors"]


@pytest.mark.parametrize(
    ("scopes", "offending", "reason"),
    [
        (["contacts:read", "invoices:read"], "invoices:read", "Unknown scope"),
        (["activities:read"], "activities:read", "not within the application's permissions"),
        (["contacts:*"], "contacts:*", "not within the application's permissions"),
        (["nothing:*"], "nothing:*", "Unknown scope"),
    ],
)
async def test_scopes_outside_catalogue_or_permissions_are_named(
    client: httpx.AsyncClient,
    session: AsyncSession,
    scopes: list[str],
    offending: str,
    reason: str,
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, permissions=["contacts:read", "deals:*"])
    response = await client.post(
        f"/v1/applications/{application['id']}/keys",
        headers=tenant.headers,
        json={"name": "k", "scopes": scopes},
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:keyservice:problem:invalid-scope"
    assert problem["scope"] == offending
    assert reason in problem["detail"]


async def test_wildcard_permission_grants_its_scopes(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, permissions=["deals:*"])
    key = await create_key(client, tenant, application["id"], scopes=["deals:read", "deals:write"])
    assert key["scopes"] == ["deals:read", "deals:write"]


async def test_list_filters_by_environment_status_and_application(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    first = await create_application(client, tenant)
    second = await create_application(client, tenant, name="Second")
    live = await create_key(client, tenant, first["id"], environment="live")
    test = await create_key(client, tenant, first["id"], environment="test")
    revoked = await create_key(client, tenant, second["id"])
    expired = await create_key(client, tenant, second["id"], expires_in="30d")
    await client.post(f"/v1/keys/{revoked['id']}/revoke", headers=tenant.headers)
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == uuid.UUID(expired["id"]))
        .values(expires_at=utcnow() - timedelta(minutes=1))
    )
    await session.commit()

    async def ids(**params: str) -> set[str]:
        response = await client.get("/v1/keys", params=params, headers=tenant.headers)
        assert response.status_code == 200
        return {k["id"] for k in response.json()["data"]}

    assert await ids(environment="test") == {test["id"]}
    assert await ids(environment="live") == {live["id"], revoked["id"], expired["id"]}
    assert await ids(status="active") == {live["id"], test["id"]}
    assert await ids(status="revoked") == {revoked["id"]}
    assert await ids(status="expired") == {expired["id"]}
    assert await ids(application_id=second["id"]) == {revoked["id"], expired["id"]}
    assert await ids(application_id=first["id"], environment="live") == {live["id"]}
    response = await client.get("/v1/keys", params={"status": "deleted"}, headers=tenant.headers)
    assert response.status_code == 422


async def test_pages_walk_every_key_once_newest_first(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = [(await create_key(client, tenant, application["id"]))["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/keys", params=params, headers=tenant.headers)).json()
        assert len(page["data"]) <= 3
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_rename_and_get(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"])
    response = await client.patch(
        f"/v1/keys/{key['id']}", json={"name": "  Staging Webhook "}, headers=tenant.headers
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Staging Webhook"
    response = await client.get(f"/v1/keys/{key['id']}", headers=tenant.headers)
    assert response.json()["name"] == "Staging Webhook"
    assert response.json()["hint"] == key["hint"]
    events = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    assert events[0]["action"] == "key.updated"
    assert events[0]["details"] == {
        "name": {"from": "Production Integration", "to": "Staging Webhook"}
    }


async def test_revoke_is_idempotent_and_audited_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"])
    first = await client.post(f"/v1/keys/{key['id']}/revoke", headers=tenant.headers)
    second = await client.post(f"/v1/keys/{key['id']}/revoke", headers=tenant.headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["revoked_at"] == second.json()["revoked_at"] is not None
    events = (
        await client.get(
            "/v1/audit-events", params={"action": "key.revoked"}, headers=tenant.headers
        )
    ).json()["data"]
    assert len(events) == 1
    assert events[0]["target_id"] == key["id"]
    assert events[0]["client_address"] == "203.0.113.7"
    assert events[0]["actor_user_id"] == str(tenant.owner.id)

"""Rotation: a new secret for the same key; the old one dies now or when its grace ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_application, create_key, create_tenant
from keyservice.models import utcnow


async def _code(client: httpx.AsyncClient, key: str) -> dict[str, object]:
    result: dict[str, object] = (await client.post("/v1/verify", json={"key": key})).json()
    return result


async def test_rotation_without_grace_kills_the_old_secret_at_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    assert (await _code(client, created["key"]))["code"] == "VALID"  # cached now

    response = await client.post(f"/v1/keys/{created['id']}/rotate", headers=tenant.headers)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["key"] != created["key"]
    assert rotated["hint"] == f"ks_live_…{rotated['key'][-4:]}"
    for field in ("id", "name", "scopes", "application_id", "created_at", "environment"):
        assert rotated[field] == created[field]
    assert rotated["last_rotated_at"] is not None

    assert (await _code(client, created["key"]))["code"] == "NOT_FOUND"
    new = await _code(client, rotated["key"])
    assert new["code"] == "VALID"
    assert new["key"]["id"] == created["id"]  # type: ignore[index]
    assert new["key"]["rotated"] is False  # type: ignore[index]

    listed = (await client.get(f"/v1/keys/{created['id']}", headers=tenant.headers)).json()
    assert listed["hint"] == rotated["hint"]
    assert "key" not in listed
    events = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    assert events[0]["action"] == "key.rotated"
    assert events[0]["details"] == {"grace_period_seconds": 0}
    assert rotated["key"] not in str(events)


async def test_rotation_with_grace_across_the_boundary(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    response = await client.post(
        f"/v1/keys/{created['id']}/rotate",
        headers=tenant.headers,
        json={"grace_period_seconds": 3600},
    )
    rotated = response.json()

    old = await _code(client, created["key"])
    assert old["code"] == "VALID"
    assert old["key"]["rotated"] is True  # type: ignore[index]
    ends = datetime.fromisoformat(old["key"]["rotated_secret_expires_at"])  # type: ignore[index]
    assert abs(ends - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)
    assert (await _code(client, rotated["key"]))["key"]["rotated"] is False  # type: ignore[index]

    app.state.verifier.clock = lambda: ends - timedelta(seconds=1)
    assert (await _code(client, created["key"]))["code"] == "VALID"
    app.state.verifier.clock = lambda: ends
    assert (await _code(client, created["key"]))["code"] == "NOT_FOUND"
    assert (await _code(client, rotated["key"]))["code"] == "VALID"
    app.state.verifier.clock = utcnow

    # A second rotation ends the first one's grace at once.
    third = (
        await client.post(
            f"/v1/keys/{created['id']}/rotate",
            headers=tenant.headers,
            json={"grace_period_seconds": 60},
        )
    ).json()
    assert (await _code(client, created["key"]))["code"] == "NOT_FOUND"
    assert (await _code(client, rotated["key"]))["key"]["rotated"] is True  # type: ignore[index]
    assert (await _code(client, third["key"]))["code"] == "VALID"


async def test_rotation_limits(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    path = f"/v1/keys/{created['id']}/rotate"
    for grace in (-1, 7 * 24 * 3600 + 1, "soon"):
        response = await client.post(
            path, headers=tenant.headers, json={"grace_period_seconds": grace}
        )
        assert response.status_code == 422
    response = await client.post(
        path, headers=tenant.headers, json={"grace_period_seconds": 7 * 24 * 3600}
    )
    assert response.status_code == 200
    await client.post(f"/v1/keys/{created['id']}/revoke", headers=tenant.headers)
    response = await client.post(path, headers=tenant.headers)
    assert response.status_code == 409
    # Revoking also kills a secret still in its grace period.
    assert (await _code(client, created["key"]))["code"] == "REVOKED"

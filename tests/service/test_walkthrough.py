"""The newcomer's first ten minutes, through the HTTP API only."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, create_tenant


async def test_issue_list_revoke_and_refuse(
    client: httpx.AsyncClient, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = await create_tenant(session)

    response = await client.post(
        "/v1/applications",
        headers=tenant.headers,
        json={
            "name": "Reporting dashboard",
            "developer_email": "Dev@Partner.example",
            "description": "Reads deals for the weekly report",
            "permissions": ["deals:read", "keyservice:applications:read"],
        },
    )
    assert response.status_code == 201, response.text
    application = response.json()

    response = await client.post(
        f"/v1/applications/{application['id']}/keys",
        headers=tenant.headers,
        json={
            "name": "Production Integration",
            "scopes": ["deals:read", "keyservice:applications:read"],
            "environment": "live",
            "expires_in": "90d",
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["key"]
    assert secret.startswith("ks_live_")
    assert created["hint"] == f"ks_live_…{secret[-4:]}"
    assert created["status"] == "active"

    # The new key works against the API, within its scopes.
    response = await client.get(f"/v1/applications/{application['id']}", headers=auth(secret))
    assert response.status_code == 200
    assert response.json()["name"] == "Reporting dashboard"

    response = await client.get("/v1/keys", headers=tenant.headers)
    assert response.status_code == 200
    [listed] = response.json()["data"]
    assert listed["id"] == created["id"]
    assert listed["hint"] == created["hint"]
    assert listed["name"] == "Production Integration"
    assert listed["scopes"] == ["deals:read", "keyservice:applications:read"]
    assert "key" not in listed

    response = await client.post(f"/v1/keys/{created['id']}/revoke", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"

    response = await client.get(f"/v1/applications/{application['id']}", headers=auth(secret))
    assert response.status_code == 401
    assert response.json()["type"] == "urn:keyservice:problem:revoked-key"
    assert response.headers["www-authenticate"].startswith("Bearer")

    # After creation the secret appears nowhere: not in reads, lists, the audit trail or logs.
    for path in (
        f"/v1/keys/{created['id']}",
        "/v1/keys",
        "/v1/applications",
        "/v1/audit-events",
        "/v1/account",
    ):
        response = await client.get(path, headers=tenant.headers)
        assert response.status_code == 200
        assert secret not in response.text
        assert secret[8:-6] not in response.text
    assert secret not in caplog.text
    assert tenant.owner_key not in caplog.text

    response = await client.get("/v1/audit-events", headers=tenant.headers)
    actions = [e["action"] for e in response.json()["data"]]
    assert actions == ["key.revoked", "key.created", "application.created", "account.bootstrapped"]

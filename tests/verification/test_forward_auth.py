"""Forward-auth for proxies: allow by status, describe the key in response headers."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_application, create_key, create_tenant
from keyservice.config import Settings
from keyservice.main import create_app
from keyservice.security import Environment, generate_key

# A proxy forwards the client's method (Envoy) or its own (nginx: GET): forward-auth answers all.
FORWARD_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@pytest.mark.parametrize(
    "headers",
    [
        lambda k: {"Authorization": f"Bearer {k}"},
        lambda k: {"Authorization": k},
        lambda k: {"x-api-key": k},
        lambda k: {"X-Api-Key": k, "Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["bearer", "bare", "x-api-key", "basic-and-x-api-key"],
)
@pytest.mark.parametrize("method", FORWARD_METHODS)
@pytest.mark.parametrize("path", ["/v1/forward-auth", "/v1/forward-auth/v1/contacts/42"])
async def test_allows_every_header_form_method_and_path(
    client: httpx.AsyncClient,
    session: AsyncSession,
    headers: Callable[[str], dict[str, str]],
    method: str,
    path: str,
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    response = await client.request(
        method, path, params={"scopes": "contacts:read"}, headers=headers(created["key"])
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-keyservice-key-id"] == created["id"]
    assert response.headers["x-keyservice-account-id"] == str(tenant.account.id)
    assert response.headers["x-keyservice-application-id"] == application["id"]
    assert response.headers["x-keyservice-scopes"] == "contacts:read"
    assert response.headers["x-keyservice-environment"] == "live"
    assert response.headers["x-keyservice-key-kind"] == "application"
    assert "x-keyservice-rotated" not in response.headers
    assert created["key"] not in str(response.headers)


async def test_refusals_by_status(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(
        client, tenant, application["id"], scopes=["contacts:read", "deals:read"]
    )
    key = {"x-api-key": created["key"]}

    async def status(path: str = "/v1/forward-auth/anything", **headers: str) -> int:
        response = await client.get(path, headers=headers)
        if response.status_code in (401, 403):
            assert response.headers["content-type"] == "application/problem+json"
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        return response.status_code

    assert await status() == 401
    assert await status(**{"x-api-key": "garbage"}) == 401
    assert await status(**{"x-api-key": generate_key("ks", Environment.live)}) == 401
    assert await status("/v1/forward-auth?scopes=contacts:read,deals:read", **key) == 200
    assert await status("/v1/forward-auth?scope=contacts:read&scope=deals:read", **key) == 200
    assert await status("/v1/forward-auth?scopes=contacts:write", **key) == 403
    assert await status("/v1/forward-auth?scope=deals:read&scope=deals:write", **key) == 403
    # A required-scopes header can only add requirements to the query's, never remove them.
    assert (
        await status(
            "/v1/forward-auth?scopes=contacts:read",
            **key,
            **{"x-keyservice-required-scopes": "deals:write"},
        )
        == 403
    )
    assert (
        await status(
            "/v1/forward-auth?scopes=deals:write", **key, **{"x-keyservice-required-scopes": ""}
        )
        == 403
    )
    assert await status(**key, **{"x-account-id": "not-a-uuid"}) == 403
    assert await status(**key, **{"x-account-id": str(tenant.account.id)}) == 200
    assert (
        await status(**key, authorization=f"Bearer {generate_key('ks', Environment.live)}") == 400
    )

    await client.post(f"/v1/keys/{created['id']}/revoke", headers=tenant.headers)
    assert await status(**key) == 401


def test_the_document_lists_every_method_forward_auth_answers() -> None:
    document = create_app(Settings(_env_file=None)).openapi()
    operations = document["paths"]["/v1/forward-auth"]
    assert sorted(operations) == sorted(m.lower() for m in FORWARD_METHODS)
    for operation in operations.values():
        assert {"200", "401", "403"} <= set(operation["responses"])

"""Applications: create, list, get, update, delete, and what that does to their keys."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, create_application, create_key, create_tenant
from keyservice.config import Settings
from keyservice.main import create_app


async def test_create_list_get_update(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    created = await create_application(
        client, tenant, name="  CRM sync ", description="Nightly sync", permissions=["deals:read"]
    )
    assert created["name"] == "CRM sync"
    assert created["developer_email"] == "dev@partner.example"
    assert created["permissions"] == ["deals:read"]

    listed = (await client.get("/v1/applications", headers=tenant.headers)).json()
    assert [a["id"] for a in listed["data"]] == [created["id"]]
    assert listed["next_cursor"] is None

    response = await client.patch(
        f"/v1/applications/{created['id']}",
        headers=tenant.headers,
        json={"developer_email": "new@partner.example", "permissions": ["deals:*"]},
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["developer_email"] == "new@partner.example"
    assert updated["permissions"] == ["deals:*"]
    assert updated["name"] == "CRM sync"
    fetched = (await client.get(f"/v1/applications/{created['id']}", headers=tenant.headers)).json()
    assert fetched == updated

    events = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    assert events[0]["action"] == "application.updated"
    assert set(events[0]["details"]) == {"developer_email", "permissions"}


@pytest.mark.parametrize(
    "body",
    [
        {"developer_email": "not-an-email"},
        {"name": ""},
        {"permissions": "contacts:read"},
        {"description": "x" * 2001},
        {"owner": "me"},
    ],
    ids=["email", "name", "permissions-type", "description", "extra-field"],
)
async def test_invalid_applications_are_422(
    client: httpx.AsyncClient, session: AsyncSession, body: dict[str, object]
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/applications",
        headers=tenant.headers,
        json={"name": "ok", "developer_email": "dev@example.com"} | body,
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:keyservice:problem:validation-error"


NAMES = [
    "Zap",
    "  padded  ",
    " ",
    "\u3000",
    "tab\there",
    "nul\x00",
    "vt\x0b",
    "x" * 200,
    " " + "x" * 200,
]
DESCRIPTIONS = ["", "  ", "line\nbreak", "bell\x07", "y" * 2000, "y" * 2000 + " "]


def _documented(field: str) -> dict[str, Any]:
    schema = create_app(Settings(_env_file=None)).openapi()["components"]["schemas"]
    documented: dict[str, Any] = schema["ApplicationCreate"]["properties"][field]
    return documented


def _allowed(documented: dict[str, Any], value: str) -> bool:
    return (
        re.fullmatch(documented["pattern"], value) is not None
        and len(value) <= documented["maxLength"]
    )


async def test_names_and_descriptions_are_accepted_as_documented(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # The document's pattern and length say what is accepted as sent, white space and all.
    tenant = await create_tenant(session)
    name, description = _documented("name"), _documented("description")
    body = {"developer_email": "dev@example.com"}
    for value in NAMES:
        response = await client.post(
            "/v1/applications", headers=tenant.headers, json=body | {"name": value}
        )
        assert (response.status_code == 201) is _allowed(name, value), (repr(value), response.text)
    for value in DESCRIPTIONS:
        response = await client.post(
            "/v1/applications",
            headers=tenant.headers,
            json=body | {"name": "Zap", "description": value},
        )
        assert (response.status_code == 201) is _allowed(description, value), repr(value)


async def test_permissions_come_from_the_catalogue(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/applications",
        headers=tenant.headers,
        json={"name": "x", "developer_email": "a@example.com", "permissions": ["payroll:read"]},
    )
    assert response.status_code == 422
    assert response.json()["scope"] == "payroll:read"
    application = await create_application(client, tenant)
    response = await client.patch(
        f"/v1/applications/{application['id']}",
        headers=tenant.headers,
        json={"permissions": ["contacts:read", "contacts:delete"]},
    )
    assert response.status_code == 422
    assert response.json()["scope"] == "contacts:delete"


async def test_narrowing_permissions_narrows_existing_keys_at_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["keyservice:applications:read", "keyservice:account:read"]
    )
    key = await create_key(
        client,
        tenant,
        application["id"],
        scopes=["keyservice:applications:read", "keyservice:account:read"],
    )
    assert (await client.get("/v1/account", headers=auth(key["key"]))).status_code == 200
    await client.patch(
        f"/v1/applications/{application['id']}",
        headers=tenant.headers,
        json={"permissions": ["keyservice:applications:read"]},
    )
    response = await client.get("/v1/account", headers=auth(key["key"]))
    assert response.status_code == 403
    assert response.json()["scope"] == "keyservice:account:read"
    assert (await client.get("/v1/applications", headers=auth(key["key"]))).status_code == 200


async def test_deleting_an_application_stops_its_keys(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, permissions=["keyservice:account:read"])
    key = await create_key(client, tenant, application["id"], scopes=["keyservice:account:read"])
    other = await create_application(client, tenant, permissions=["keyservice:account:read"])
    kept = await create_key(client, tenant, other["id"], scopes=["keyservice:account:read"])

    response = await client.delete(f"/v1/applications/{application['id']}", headers=tenant.headers)
    assert response.status_code == 204
    assert response.content == b""

    response = await client.get("/v1/account", headers=auth(key["key"]))
    assert response.status_code == 401
    assert (await client.get("/v1/account", headers=auth(kept["key"]))).status_code == 200
    response = await client.get(f"/v1/applications/{application['id']}", headers=tenant.headers)
    assert response.status_code == 404
    response = await client.get(f"/v1/keys/{key['id']}", headers=tenant.headers)
    assert response.status_code == 404
    response = await client.delete(f"/v1/applications/{application['id']}", headers=tenant.headers)
    assert response.status_code == 404

    events = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    assert events[0]["action"] == "application.deleted"
    assert events[0]["target_id"] == application["id"]

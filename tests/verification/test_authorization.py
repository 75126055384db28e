"""Who may do what: keyservice's own scopes, the user's role, and no escalation."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from factories import (
    auth,
    create_application,
    create_key,
    create_personal_key,
    create_tenant,
    create_user,
)
from keyservice.models import Role


async def test_missing_scope_is_403_naming_it(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["keyservice:applications:read", "contacts:read"]
    )
    reader = await create_key(
        client, tenant, application["id"], scopes=["keyservice:applications:read"]
    )
    response = await client.post(
        "/v1/applications",
        headers=auth(reader["key"]),
        json={"name": "x", "developer_email": "a@example.com"},
    )
    assert response.status_code == 403
    problem = response.json()
    assert problem["type"] == "urn:keyservice:problem:insufficient-scope"
    assert problem["scope"] == "keyservice:applications:write"
    assert "keyservice:applications:write" in problem["detail"]

    # A product scope grants nothing on the management API.
    product = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    response = await client.get("/v1/keys", headers=auth(product["key"]))
    assert response.status_code == 403
    assert response.json()["scope"] == "keyservice:keys:read"


async def test_members_read_but_do_not_write(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    member = await create_user(session, accounts={tenant.account.id: Role.member})
    key = await create_personal_key(session, member, scopes=["keyservice:*"])

    for path in ("/v1/account", "/v1/applications", "/v1/keys", "/v1/account/members"):
        response = await client.get(path, headers=auth(key))
        assert response.status_code == 200, (path, response.text)

    refused = [
        client.post(
            "/v1/applications",
            headers=auth(key),
            json={"name": "x", "developer_email": "a@example.com"},
        ),
        client.post(
            f"/v1/applications/{application['id']}/keys",
            headers=auth(key),
            json={"name": "x", "scopes": ["contacts:read"]},
        ),
        client.patch("/v1/account", headers=auth(key), json={"name": "Mine now"}),
        client.delete(f"/v1/applications/{application['id']}", headers=auth(key)),
    ]
    for request in refused:
        response = await request
        assert response.status_code == 403
        assert response.json()["type"] == "urn:keyservice:problem:insufficient-role"
        assert response.json()["role"] == "member"

    # Promoted to admin, the same key may manage.
    await client.patch(
        f"/v1/account/members/{member.id}", headers=tenant.headers, json={"role": "admin"}
    )
    response = await client.patch("/v1/account", headers=auth(key), json={"name": "Renamed"})
    assert response.status_code == 200


async def test_a_key_cannot_hand_on_keyservice_scopes_it_lacks(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["keyservice:keys:write", "keyservice:members:write"]
    )
    issuer = await create_key(client, tenant, application["id"], scopes=["keyservice:keys:write"])
    response = await client.post(
        f"/v1/applications/{application['id']}/keys",
        headers=auth(issuer["key"]),
        json={"name": "escalated", "scopes": ["keyservice:members:write"]},
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:keyservice:problem:invalid-scope"
    assert response.json()["scope"] == "keyservice:members:write"

    response = await client.post(
        f"/v1/applications/{application['id']}/keys",
        headers=auth(issuer["key"]),
        json={"name": "same rights", "scopes": ["keyservice:keys:write"]},
    )
    assert response.status_code == 201


async def test_only_owners_grant_ownership(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    admin = await create_user(session, accounts={tenant.account.id: Role.admin})
    admin_key = await create_personal_key(session, admin, scopes=["keyservice:*"])
    response = await client.post(
        "/v1/account/members",
        headers=auth(admin_key),
        json={"email": "new-owner@example.com", "role": "owner"},
    )
    assert response.status_code == 403
    response = await client.patch(
        f"/v1/account/members/{tenant.owner.id}", headers=auth(admin_key), json={"role": "member"}
    )
    assert response.status_code == 403
    response = await client.post(
        "/v1/account/members",
        headers=auth(admin_key),
        json={"email": "new-admin@example.com", "role": "admin"},
    )
    assert response.status_code == 201


async def test_a_user_in_several_accounts_names_one(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    third = await create_tenant(session, "Third")
    user = await create_user(
        session, accounts={first.account.id: Role.admin, second.account.id: Role.member}
    )
    key = await create_personal_key(session, user, scopes=["keyservice:*"])

    response = await client.get("/v1/account", headers=auth(key))
    assert response.status_code == 400
    assert response.json()["type"] == "urn:keyservice:problem:account-required"

    for tenant in (first, second):
        response = await client.get(
            "/v1/account", headers=auth(key) | {"X-Account-Id": str(tenant.account.id)}
        )
        assert response.status_code == 200
        assert response.json()["name"] == tenant.account.name

    response = await client.get(
        "/v1/account", headers=auth(key) | {"X-Account-Id": str(third.account.id)}
    )
    assert response.status_code == 403
    assert response.json()["type"] == "urn:keyservice:problem:account-forbidden"

    # The role is per account: admin in the first, member in the second.
    body = {"name": "Renamed"}
    response = await client.patch(
        "/v1/account", json=body, headers=auth(key) | {"X-Account-Id": str(first.account.id)}
    )
    assert response.status_code == 200
    response = await client.patch(
        "/v1/account", json=body, headers=auth(key) | {"X-Account-Id": str(second.account.id)}
    )
    assert response.status_code == 403


async def test_an_application_key_is_bound_to_its_account(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    application = await create_application(client, first, permissions=["keyservice:account:read"])
    key = await create_key(client, first, application["id"], scopes=["keyservice:account:read"])
    response = await client.get(
        "/v1/account", headers=auth(key["key"]) | {"X-Account-Id": str(second.account.id)}
    )
    assert response.status_code == 403
    assert response.json()["type"] == "urn:keyservice:problem:account-forbidden"
    assert "Second" not in response.text


async def test_an_application_key_cannot_make_admins(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, permissions=["keyservice:members:write"])
    key = await create_key(client, tenant, application["id"], scopes=["keyservice:members:write"])
    for role in ("admin", "owner"):
        response = await client.post(
            "/v1/account/members",
            headers=auth(key["key"]),
            json={"email": f"{role}@attacker.example", "role": role},
        )
        assert response.status_code == 403, role
    admin = await create_user(session, accounts={tenant.account.id: Role.admin})
    response = await client.patch(
        f"/v1/account/members/{admin.id}", headers=auth(key["key"]), json={"role": "member"}
    )
    assert response.status_code == 403
    response = await client.delete(f"/v1/account/members/{admin.id}", headers=auth(key["key"]))
    assert response.status_code == 403
    response = await client.post(
        "/v1/account/members", headers=auth(key["key"]), json={"email": "new@example.com"}
    )
    assert response.status_code == 201


async def test_a_key_cannot_widen_permissions_beyond_its_own_scopes(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client,
        tenant,
        permissions=["keyservice:applications:read", "keyservice:applications:write"],
    )
    key = await create_key(
        client,
        tenant,
        application["id"],
        scopes=["keyservice:applications:read", "keyservice:applications:write"],
    )
    response = await client.patch(
        f"/v1/applications/{application['id']}",
        headers=auth(key["key"]),
        json={"permissions": ["keyservice:*"]},
    )
    assert response.status_code == 422
    assert response.json()["scope"] == "keyservice:*"
    response = await client.post(
        "/v1/applications",
        headers=auth(key["key"]),
        json={
            "name": "x",
            "developer_email": "a@example.com",
            "permissions": ["keyservice:keys:write"],
        },
    )
    assert response.status_code == 422
    # Product scopes are the applications writer's to give.
    response = await client.patch(
        f"/v1/applications/{application['id']}",
        headers=auth(key["key"]),
        json={"permissions": ["keyservice:applications:read", "deals:read"]},
    )
    assert response.status_code == 200


async def test_a_test_key_issues_only_test_keys(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["keyservice:keys:write", "contacts:read"]
    )
    test_key = await create_key(
        client, tenant, application["id"], scopes=["keyservice:keys:write"], environment="test"
    )
    path = f"/v1/applications/{application['id']}/keys"
    body = {"name": "x", "scopes": ["contacts:read"]}
    response = await client.post(path, headers=auth(test_key["key"]), json=body)
    assert response.status_code == 403
    response = await client.post(
        path, headers=auth(test_key["key"]), json=body | {"environment": "test"}
    )
    assert response.status_code == 201
    assert response.json()["key"].startswith("ks_test_")

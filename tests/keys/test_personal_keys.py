"""A user's own keys: their rights follow the user's role in each account."""

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


async def test_create_list_rename_rotate_revoke_own_keys(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/users/me/keys",
        headers=tenant.headers,
        json={"name": "Reporting script", "scopes": ["reports:read"], "expires_in": "90d"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["kind"] == "personal"
    assert created["user_id"] == str(tenant.owner.id)
    assert created["application_id"] is None
    result = (await client.post("/v1/verify", json={"key": created["key"]})).json()
    assert result["code"] == "VALID"
    assert result["key"]["role"] == "owner"
    assert result["key"]["account_id"] == str(tenant.account.id)

    listed = (await client.get("/v1/users/me/keys", headers=tenant.headers)).json()["data"]
    assert {k["name"] for k in listed} == {"Reporting script", "Owner key (bootstrap)"}
    # Personal keys are the user's, not the account's.
    assert (await client.get("/v1/keys", headers=tenant.headers)).json()["data"] == []

    path = f"/v1/users/me/keys/{created['id']}"
    response = await client.patch(path, headers=tenant.headers, json={"name": "Renamed"})
    assert response.json()["name"] == "Renamed"
    rotated = (await client.post(f"{path}/rotate", headers=tenant.headers)).json()
    assert (await client.post("/v1/verify", json={"key": created["key"]})).json()[
        "code"
    ] == "NOT_FOUND"
    assert (await client.post(f"{path}/revoke", headers=tenant.headers)).json()[
        "status"
    ] == "revoked"
    assert (await client.post("/v1/verify", json={"key": rotated["key"]})).json()[
        "code"
    ] == "REVOKED"


async def test_own_keys_are_private(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    colleague = await create_user(session, accounts={tenant.account.id: Role.admin})
    colleague_key = await create_personal_key(session, colleague, scopes=["keyservice:*"])
    theirs = (
        await client.post(
            "/v1/users/me/keys", headers=auth(colleague_key), json={"name": "x", "scopes": []}
        )
    ).json()
    for method, suffix in (("GET", ""), ("PATCH", ""), ("POST", "/revoke"), ("POST", "/rotate")):
        response = await client.request(
            method,
            f"/v1/users/me/keys/{theirs['id']}{suffix}",
            headers=tenant.headers,
            json={"name": "mine"} if method == "PATCH" else None,
        )
        assert response.status_code == 404, (method, suffix)


async def test_an_application_key_has_no_user(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, permissions=["keyservice:keys:write"])
    key = await create_key(client, tenant, application["id"], scopes=["keyservice:keys:write"])
    response = await client.post(
        "/v1/users/me/keys", headers=auth(key["key"]), json={"name": "x", "scopes": []}
    )
    assert response.status_code == 403
    assert (await client.get("/v1/users/me", headers=auth(key["key"]))).status_code == 403


async def test_a_narrow_personal_key_cannot_mint_wider_ones(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    narrow = await create_personal_key(session, tenant.owner, scopes=["keyservice:keys:write"])
    response = await client.post(
        "/v1/users/me/keys",
        headers=auth(narrow),
        json={"name": "wider", "scopes": ["keyservice:members:write"]},
    )
    assert response.status_code == 422
    assert response.json()["scope"] == "keyservice:members:write"
    reader = await create_personal_key(session, tenant.owner, scopes=["contacts:read"])
    response = await client.post(
        "/v1/users/me/keys", headers=auth(reader), json={"name": "x", "scopes": []}
    )
    assert response.status_code == 403
    assert response.json()["scope"] == "keyservice:keys:write"


async def test_me_lists_accounts_and_roles(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "Alpha")
    second = await create_tenant(session, "Beta")
    user = await create_user(
        session, accounts={first.account.id: Role.member, second.account.id: Role.admin}
    )
    key = await create_personal_key(session, user, scopes=["contacts:read"])
    me = (await client.get("/v1/users/me", headers=auth(key))).json()
    assert me["id"] == str(user.id)
    assert me["accounts"] == [
        {
            "account_id": str(first.account.id),
            "name": "Alpha",
            "role": "member",
            "status": "active",
        },
        {"account_id": str(second.account.id), "name": "Beta", "role": "admin", "status": "active"},
    ]


async def test_an_owners_personal_keys_are_in_the_accounts_audit_trail(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session, "Acme")
    other = await create_tenant(session, "Other")
    # The owner has joined another account too.
    response = await client.post(
        "/v1/account/members",
        headers=other.headers,
        json={"email": tenant.owner.email, "role": "member"},
    )
    token = response.json()["invitation_token"]
    assert (
        await client.post(
            "/v1/users/me/invitations/accept", headers=tenant.headers, json={"token": token}
        )
    ).status_code == 200
    third = await create_tenant(session, "Third")
    # ...nor does one whose invitation they have not accepted.
    response = await client.post(
        "/v1/account/members", headers=third.headers, json={"email": tenant.owner.email}
    )
    assert response.json()["status"] == "invited"
    admin = await create_user(session, accounts={tenant.account.id: Role.admin})
    admin_key = await create_personal_key(session, admin, scopes=["keyservice:audit:read"])

    response = await client.post(
        "/v1/users/me/keys",
        headers=tenant.headers,
        json={"name": "Back door", "scopes": ["keyservice:*"]},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    path = f"/v1/users/me/keys/{created['id']}"
    assert (
        await client.patch(path, headers=tenant.headers, json={"name": "Deploys"})
    ).status_code == 200
    assert (await client.post(f"{path}/rotate", headers=tenant.headers)).status_code == 200
    assert (await client.post(f"{path}/revoke", headers=tenant.headers)).status_code == 200

    async def trail(headers: dict[str, str]) -> list[dict[str, object]]:
        response = await client.get("/v1/audit-events", headers=headers)
        assert response.status_code == 200, response.text
        return [e for e in response.json()["data"] if e["target_id"] == created["id"]]

    events = await trail(auth(admin_key))
    assert [e["action"] for e in events] == [
        "key.revoked",
        "key.rotated",
        "key.updated",
        "key.created",
    ]
    created_event = events[-1]
    assert created_event["actor_user_id"] == str(tenant.owner.id)
    assert created_event["details"]["kind"] == "personal"  # type: ignore[index]
    assert created_event["details"]["scopes"] == ["keyservice:*"]  # type: ignore[index]
    assert events[2]["details"] == {"name": {"from": "Back door", "to": "Deploys"}}
    assert created["key"] not in str(events)
    # The other account the owner joined sees it too; an account they have not joined does not.
    assert [e["action"] for e in await trail(other.headers)] == [e["action"] for e in events]
    assert await trail(third.headers) == []

"""The account and its members: rename, add, change role, remove, and the last owner."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_tenant
from keyservice.accounts.passwords import verify_password
from keyservice.models import User


async def test_rename_account(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    response = await client.patch("/v1/account", headers=tenant.headers, json={"name": "Acme"})
    assert response.status_code == 200
    assert response.json()["name"] == "Acme"
    assert (await client.get("/v1/account", headers=tenant.headers)).json()["name"] == "Acme"
    event = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"][0]
    assert event["action"] == "account.updated"


async def test_add_member_with_initial_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    password = "correct horse battery staple"
    response = await client.post(
        "/v1/account/members",
        headers=tenant.headers,
        json={"email": "Dana@Example.com", "role": "admin", "password": password},
    )
    assert response.status_code == 201, response.text
    member = response.json()
    assert member["email"] == "dana@example.com"
    assert member["role"] == "admin"
    assert password not in response.text

    user = (await session.scalars(select(User).where(User.email == "dana@example.com"))).one()
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert password not in user.password_hash
    assert verify_password(password, user.password_hash)
    assert not verify_password("wrong password!", user.password_hash)

    response = await client.post(
        "/v1/account/members", headers=tenant.headers, json={"email": "dana@example.com"}
    )
    assert response.status_code == 409

    listed = (await client.get("/v1/account/members", headers=tenant.headers)).json()["data"]
    assert {(m["email"], m["role"]) for m in listed} == {
        ("dana@example.com", "admin"),
        (tenant.owner.email, "owner"),
    }
    events = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    assert events[0]["action"] == "member.added"
    assert password not in str(events)


async def test_an_existing_user_keeps_their_password(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    await client.post(
        "/v1/account/members",
        headers=first.headers,
        json={"email": "sam@example.com", "password": "sam's own password"},
    )
    response = await client.post(
        "/v1/account/members",
        headers=second.headers,
        json={"email": "sam@example.com", "password": "attacker's password"},
    )
    assert response.status_code == 201
    user = (await session.scalars(select(User).where(User.email == "sam@example.com"))).one()
    await session.refresh(user)
    assert verify_password("sam's own password", user.password_hash)
    assert not verify_password("attacker's password", user.password_hash)


async def test_short_password_is_refused_without_echo(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/account/members",
        headers=tenant.headers,
        json={"email": "x@example.com", "password": "s3cr3t"},
    )
    assert response.status_code == 422
    assert "s3cr3t" not in response.text


async def test_change_role_and_remove(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    added = (
        await client.post(
            "/v1/account/members", headers=tenant.headers, json={"email": "kim@example.com"}
        )
    ).json()
    assert added["role"] == "member"
    path = f"/v1/account/members/{added['user_id']}"
    response = await client.patch(path, headers=tenant.headers, json={"role": "owner"})
    assert response.status_code == 200
    assert response.json()["role"] == "owner"
    response = await client.patch(path, headers=tenant.headers, json={"role": "superuser"})
    assert response.status_code == 422
    response = await client.delete(path, headers=tenant.headers)
    assert response.status_code == 204
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    actions = [
        e["action"]
        for e in (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    ]
    assert actions[:3] == ["member.removed", "member.role_changed", "member.added"]


async def test_the_last_owner_stays(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    path = f"/v1/account/members/{tenant.owner.id}"
    response = await client.delete(path, headers=tenant.headers)
    assert response.status_code == 409
    assert "last owner" in response.json()["detail"]
    response = await client.patch(path, headers=tenant.headers, json={"role": "admin"})
    assert response.status_code == 409

    second = (
        await client.post(
            "/v1/account/members",
            headers=tenant.headers,
            json={"email": "co-owner@example.com", "role": "owner"},
        )
    ).json()
    response = await client.patch(path, headers=tenant.headers, json={"role": "admin"})
    assert response.status_code == 200
    # Now the co-owner is the last owner.
    response = await client.delete(
        f"/v1/account/members/{second['user_id']}",
        headers=tenant.headers | {"X-Account-Id": str(tenant.account.id)},
    )
    assert response.status_code == 403  # the former owner, now admin, cannot unmake owners
    assert (await client.get("/v1/account/members", headers=tenant.headers)).status_code == 200


async def test_unknown_member_is_404(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    response = await client.patch(
        f"/v1/account/members/{uuid.uuid4()}", headers=tenant.headers, json={"role": "admin"}
    )
    assert response.status_code == 404

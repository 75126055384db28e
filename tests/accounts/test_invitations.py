"""Users are shared between accounts, so another account must never be able to enrol an identity
it controls into this one: a user who already exists joins only by accepting, with a token."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, create_tenant
from keyservice.accounts.passwords import verify_password
from keyservice.models import User

PASSWORD = "attacker chosen password"


async def _login(client: httpx.AsyncClient, email: str, password: str) -> str:
    response = await client.post("/v1/sessions", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_an_identity_made_by_another_account_cannot_join_without_the_token(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    victim = await create_tenant(session, "Victim")
    attacker = await create_tenant(session, "Attacker")
    # The attacker provisions the victim's CFO in advance, with a password of its choosing...
    response = await client.post(
        "/v1/account/members",
        headers=attacker.headers,
        json={"email": "cfo@victim.example", "role": "member", "password": PASSWORD},
    )
    assert response.json()["status"] == "active"
    # ...then the victim adds its CFO.
    response = await client.post(
        "/v1/account/members",
        headers=victim.headers,
        json={"email": "cfo@victim.example", "role": "admin", "password": "victim's choice!"},
    )
    assert response.status_code == 201
    invited = response.json()
    assert invited["status"] == "invited"
    token = invited["invitation_token"]
    assert token.startswith("ksinv_")

    user = (await session.scalars(select(User).where(User.email == "cfo@victim.example"))).one()
    await session.refresh(user)
    assert verify_password(PASSWORD, user.password_hash)  # the victim's password was not set
    stolen = await _login(client, "cfo@victim.example", PASSWORD)
    headers = auth(stolen) | {"X-Account-Id": str(victim.account.id)}
    assert (await client.get("/v1/account", headers=headers)).status_code == 403

    # Without the victim's token, the attacker cannot accept on the CFO's behalf.
    response = await client.post(
        "/v1/users/me/invitations/accept", headers=auth(stolen), json={"token": "ksinv_guess"}
    )
    assert response.status_code == 404
    assert (await client.get("/v1/account", headers=headers)).status_code == 403

    members = (await client.get("/v1/account/members", headers=victim.headers)).json()["data"]
    assert {m["email"]: m["status"] for m in members}["cfo@victim.example"] == "invited"
    assert token not in str(members)


async def test_an_invited_user_accepts_with_the_token(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    await client.post(
        "/v1/account/members",
        headers=first.headers,
        json={"email": "sam@example.com", "password": "sam's own password"},
    )
    token = (
        await client.post(
            "/v1/account/members",
            headers=second.headers,
            json={"email": "sam@example.com", "role": "admin"},
        )
    ).json()["invitation_token"]
    sam = await _login(client, "sam@example.com", "sam's own password")
    # Still one account: the invitation alone changes nothing for Sam's keys.
    assert (await client.get("/v1/account", headers=auth(sam))).json()["name"] == "First"

    response = await client.post(
        "/v1/users/me/invitations/accept", headers=auth(sam), json={"token": token}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "account_id": str(second.account.id),
        "name": "Second",
        "role": "admin",
        "status": "active",
    }
    response = await client.get(
        "/v1/account", headers=auth(sam) | {"X-Account-Id": str(second.account.id)}
    )
    assert response.json()["name"] == "Second"
    # The token is spent.
    response = await client.post(
        "/v1/users/me/invitations/accept", headers=auth(sam), json={"token": token}
    )
    assert response.status_code == 404
    events = (await client.get("/v1/audit-events", headers=second.headers)).json()["data"]
    assert [e["action"] for e in events[:2]] == ["member.joined", "member.invited"]


async def test_another_accounts_invitation_does_not_disturb_a_users_keys(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    victim = await create_tenant(session, "Victim")
    attacker = await create_tenant(session, "Attacker")
    await client.post(
        "/v1/account/members", headers=attacker.headers, json={"email": victim.owner.email}
    )
    # The victim's owner key still reaches its one account without naming it.
    response = await client.get("/v1/account", headers=victim.headers)
    assert response.status_code == 200
    assert response.json()["name"] == "Victim"


async def test_a_token_for_someone_else_is_useless(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    for email in ("a@example.com", "b@example.com"):
        await client.post(
            "/v1/account/members",
            headers=first.headers,
            json={"email": email, "password": "a long password"},
        )
    token_for_a = (
        await client.post(
            "/v1/account/members", headers=second.headers, json={"email": "a@example.com"}
        )
    ).json()["invitation_token"]
    b = await _login(client, "b@example.com", "a long password")
    response = await client.post(
        "/v1/users/me/invitations/accept", headers=auth(b), json={"token": token_for_a}
    )
    assert response.status_code == 404


async def test_the_only_owner_withdraws_or_re_roles_a_pending_owner_invitation(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session, "Acme")
    elsewhere = await create_tenant(session, "Elsewhere")
    invitee = elsewhere.owner

    async def invite() -> str:
        response = await client.post(
            "/v1/account/members",
            headers=tenant.headers,
            json={"email": invitee.email, "role": "owner"},
        )
        assert response.json()["status"] == "invited", response.text
        return f"/v1/account/members/{invitee.id}"

    path = await invite()
    # The invitation is withdrawn: the invited user never joined, so it is no owner to keep.
    response = await client.delete(path, headers=tenant.headers)
    assert response.status_code == 204, response.text
    assert (await client.get(path, headers=tenant.headers)).status_code == 404

    path = await invite()
    response = await client.patch(path, headers=tenant.headers, json={"role": "admin"})
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
    assert response.json()["status"] == "invited"
    response = await client.patch(path, headers=tenant.headers, json={"role": "owner"})
    assert response.status_code == 200, response.text

    # With an owner invitation pending, the account's one real owner is still its last.
    owner_path = f"/v1/account/members/{tenant.owner.id}"
    response = await client.patch(owner_path, headers=tenant.headers, json={"role": "admin"})
    assert response.status_code == 409
    assert "last owner" in response.json()["detail"]
    response = await client.delete(owner_path, headers=tenant.headers)
    assert response.status_code == 409
    assert "last owner" in response.json()["detail"]

    actions = [
        e["action"]
        for e in (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    ]
    assert actions[:5] == [
        "member.role_changed",
        "member.role_changed",
        "member.invited",
        "member.removed",
        "member.invited",
    ]

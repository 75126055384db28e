"""Another account's objects are 404 on every route, never 403, and never listed."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_application, create_key, create_tenant, create_user
from keyservice.models import Role


async def test_every_route_hides_another_accounts_objects(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    victim = await create_tenant(session, "Victim")
    intruder = await create_tenant(session, "Intruder")
    application = await create_application(client, victim)
    key = await create_key(client, victim, application["id"])
    member = await create_user(session, accounts={victim.account.id: Role.admin})

    app_path = f"/v1/applications/{application['id']}"
    key_path = f"/v1/keys/{key['id']}"
    member_path = f"/v1/account/members/{member.id}"
    attempts = [
        ("GET", app_path, None),
        ("PATCH", app_path, {"name": "pwned"}),
        ("DELETE", app_path, None),
        ("POST", f"{app_path}/keys", {"name": "backdoor", "scopes": ["contacts:read"]}),
        ("GET", key_path, None),
        ("PATCH", key_path, {"name": "pwned"}),
        ("POST", f"{key_path}/revoke", None),
        ("GET", member_path, None),
        ("PATCH", member_path, {"role": "member"}),
        ("DELETE", member_path, None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=intruder.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["type"] == "urn:keyservice:problem:not-found"
        assert "Victim" not in response.text

    for path in (
        "/v1/applications",
        "/v1/keys",
        "/v1/account/members",
        "/v1/audit-events",
        "/v1/events",
    ):
        response = await client.get(path, headers=intruder.headers)
        assert response.status_code == 200
        text = response.text
        assert application["id"] not in text
        assert key["id"] not in text
        assert str(member.id) not in text
    response = await client.get(
        "/v1/keys", params={"application_id": application["id"]}, headers=intruder.headers
    )
    assert response.json()["data"] == []

    # Nothing changed for the victim.
    response = await client.get(app_path, headers=victim.headers)
    assert response.json()["name"] == application["name"]
    response = await client.get(key_path, headers=victim.headers)
    assert response.json()["status"] == "active"
    assert response.json()["name"] == key["name"]
    response = await client.get(member_path, headers=victim.headers)
    assert response.json()["role"] == "admin"


async def test_an_unknown_id_and_a_foreign_id_look_the_same(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    victim = await create_tenant(session, "Victim")
    intruder = await create_tenant(session, "Intruder")
    application = await create_application(client, victim)
    foreign = await client.get(f"/v1/applications/{application['id']}", headers=intruder.headers)
    unknown = await client.get(
        "/v1/applications/00000000-0000-4000-8000-000000000000", headers=intruder.headers
    )
    assert foreign.status_code == unknown.status_code == 404
    foreign_problem, unknown_problem = foreign.json(), unknown.json()
    del foreign_problem["instance"], unknown_problem["instance"]
    assert foreign_problem == unknown_problem

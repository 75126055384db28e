"""Console logins: a session key with the user's role rights; failures never say which part was
wrong, and repeated failures are slowed down."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import auth, create_tenant
from keyservice.accounts import passwords, sessions

PASSWORD = "correct horse battery staple"


async def _member(client: httpx.AsyncClient, tenant_headers: dict[str, str], role: str) -> str:
    email = f"{role}@example.com"
    response = await client.post(
        "/v1/account/members",
        headers=tenant_headers,
        json={"email": email, "role": role, "password": PASSWORD},
    )
    assert response.status_code == 201
    return email


async def test_login_gives_a_session_key_with_role_rights(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    email = await _member(client, tenant.headers, "member")
    response = await client.post(
        "/v1/sessions", json={"email": email.upper(), "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    login = response.json()
    assert login["user"]["email"] == email
    assert login["user"]["accounts"][0]["role"] == "member"
    key = login["key"]

    assert (await client.get("/v1/applications", headers=auth(key))).status_code == 200
    response = await client.post(
        "/v1/applications",
        headers=auth(key),
        json={"name": "x", "developer_email": "a@example.com"},
    )
    assert response.status_code == 403  # a member reads only
    listed = (await client.get("/v1/users/me/keys", headers=auth(key))).json()["data"]
    assert listed == []  # session keys are not personal keys

    response = await client.delete("/v1/sessions/current", headers=auth(key))
    assert response.status_code == 204
    response = await client.get("/v1/applications", headers=auth(key))
    assert response.status_code == 401
    assert response.json()["type"] == "urn:keyservice:problem:revoked-key"


async def test_wrong_email_and_wrong_password_look_the_same(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    email = await _member(client, tenant.headers, "admin")
    wrong_password = await client.post("/v1/sessions", json={"email": email, "password": "nope"})
    wrong_email = await client.post(
        "/v1/sessions", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong_password.status_code == wrong_email.status_code == 401
    first, second = wrong_password.json(), wrong_email.json()
    assert first == second
    assert first["type"] == "urn:keyservice:problem:invalid-credentials"
    assert PASSWORD not in wrong_email.text


async def test_repeated_failures_for_an_email_are_slowed_down(
    client: httpx.AsyncClient, session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    tenant = await create_tenant(session)
    email = await _member(client, tenant.headers, "admin")
    other = await _member(client, tenant.headers, "member")
    for _ in range(5):
        response = await client.post("/v1/sessions", json={"email": email, "password": "guess"})
        assert response.status_code == 401
    # Now even the right password waits, from this address or another.
    for address in ("203.0.113.7", "198.51.100.9"):
        async with client_for(make_app(), address) as elsewhere:
            response = await elsewhere.post(
                "/v1/sessions", json={"email": email, "password": PASSWORD}
            )
            assert response.status_code == 429
            assert 0 < int(response.headers["retry-after"]) <= 15 * 60
    # Another user is not affected.
    response = await client.post("/v1/sessions", json={"email": other, "password": PASSWORD})
    assert response.status_code == 201


async def test_repeated_failures_from_an_address_are_slowed_down(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(login_failures_per_address=3)
    async with client_for(app, "192.0.2.1") as attacker, client_for(app, "192.0.2.2") as user:
        tenant = await create_tenant(session)
        email = await _member(user, tenant.headers, "admin")
        for n in range(3):
            response = await attacker.post(
                "/v1/sessions", json={"email": f"victim{n}@example.com", "password": "guess"}
            )
            assert response.status_code == 401
        response = await attacker.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert response.status_code == 429
        response = await user.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201


async def test_only_a_session_key_ends_a_session(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.delete("/v1/sessions/current", headers=tenant.headers)
    assert response.status_code == 403
    assert (await client.get("/v1/account", headers=tenant.headers)).status_code == 200


async def test_a_login_does_not_stall_the_verifications_around_it(
    client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argon2 runs off the event loop: while a login's password check is under way, a
    verification is answered. (Held on the loop, the check would hold the verification too, and
    the check waits for it.)"""
    tenant = await create_tenant(session)
    email = await _member(client, tenant.headers, "member")
    answered = threading.Event()
    checked_on: list[threading.Thread] = []

    def slow_check(password: str, password_hash: str | None) -> bool:
        checked_on.append(threading.current_thread())
        answered.wait(timeout=10)
        return passwords.verify_password(password, password_hash)

    monkeypatch.setattr(sessions, "verify_password", slow_check)
    login = asyncio.create_task(
        client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    )
    while not checked_on:
        await asyncio.sleep(0.001)
    verified = await client.get("/v1/account", headers=tenant.headers)
    answered.set()
    assert verified.status_code == 200
    assert (await login).status_code == 201
    assert checked_on[0] is not threading.main_thread()

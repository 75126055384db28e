"""POST /v1/verify: every answer code, where the key may come from, and what a caller learns."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import (
    auth,
    create_application,
    create_key,
    create_personal_key,
    create_tenant,
    create_user,
)
from keyservice.models import Role, utcnow
from keyservice.security import Environment, generate_key


async def _verify(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post("/v1/verify", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


async def test_valid_key_answers_its_identity(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(
        client, tenant, application["id"], scopes=["contacts:read", "deals:read"], expires_in="90d"
    )
    result = await _verify(
        client, key=created["key"], scopes=["contacts:read"], endpoint="GET /v1/contacts"
    )
    assert result["valid"] is True
    assert result["code"] == "VALID"
    assert result["key"] == {
        "id": created["id"],
        "name": "Production Integration",
        "kind": "application",
        "environment": "live",
        "account_id": str(tenant.account.id),
        "application_id": application["id"],
        "user_id": None,
        "role": None,
        "scopes": ["contacts:read", "deals:read"],
        "expires_at": created["expires_at"],
        "rotated": False,
        "rotated_secret_expires_at": None,
    }


@pytest.mark.parametrize(
    "headers",
    [
        lambda k: {"Authorization": f"Bearer {k}"},
        lambda k: {"Authorization": k},
        lambda k: {"x-api-key": k},
    ],
    ids=["bearer", "bare", "x-api-key"],
)
async def test_key_from_the_request_headers(
    client: httpx.AsyncClient,
    session: AsyncSession,
    headers: Callable[[str], dict[str, str]],
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    response = await client.post("/v1/verify", json={}, headers=headers(created["key"]))
    assert response.json()["code"] == "VALID"
    assert response.json()["key"]["id"] == created["id"]


async def test_every_refusal_code(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"], expires_in="30d")
    key = created["key"]

    async def code(**body: object) -> object:
        result = await _verify(client, **body)
        assert result["valid"] is (result["code"] == "VALID")
        if result["code"] != "VALID":
            assert result["key"] is None
            assert result["detail"]
        return result["code"]

    assert await code(key=key) == "VALID"
    assert await code(key=key[:-1]) == "MALFORMED"
    assert await code(key="not a key") == "MALFORMED"
    assert await code(key=generate_key("ks", Environment.live)) == "NOT_FOUND"
    assert await code(key=key, scopes=["deals:write"]) == "INSUFFICIENT_SCOPE"
    assert await code(key=key, scopes=["contacts:read", "deals:write"]) == "INSUFFICIENT_SCOPE"
    assert await code(key=key, account_id=str(uuid.uuid4())) == "ACCOUNT_FORBIDDEN"
    assert await code(key=key, account_id=str(tenant.account.id)) == "VALID"

    app.state.verifier.clock = lambda: utcnow() + timedelta(days=31)
    assert await code(key=key) == "EXPIRED"
    app.state.verifier.clock = utcnow

    await client.post(f"/v1/keys/{created['id']}/revoke", headers=tenant.headers)
    assert await code(key=key) == "REVOKED"

    user = await create_user(
        session,
        accounts={
            tenant.account.id: Role.admin,
            (await create_tenant(session)).account.id: Role.member,
        },
    )
    personal = await create_personal_key(session, user, scopes=["contacts:read"])
    assert await code(key=personal) == "ACCOUNT_REQUIRED"
    assert await code(key=personal, account_id=str(tenant.account.id)) == "VALID"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"key": 42}',
        b'{"key": "ks_live_x", "scopes": "contacts:read"}',
        b'{"key": "ks_live_x", "account_id": "nope"}',
        b'{"key": "' + b"x" * 600 + b'"}',
        b'{"key": "ks_live_x", "surprise": true}',
        b'{"key": "ks_live_x", "client_address": "not-an-ip"}',
        b"[]",
        b"{}",
    ],
    ids=[
        "not-json",
        "type",
        "scopes-type",
        "account",
        "oversized-key",
        "extra",
        "address",
        "array",
        "no-key",
    ],
)
async def test_malformed_requests_are_422(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/v1/verify", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("address", [True, 1, 3232235777, ["10.0.0.1"]])
async def test_client_address_is_a_string_holding_an_ip_address(
    client: httpx.AsyncClient, session: AsyncSession, address: object
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/verify", json={"key": tenant.owner_key, "client_address": address}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "client_address"]
    for address in ("192.0.2.1", "2001:db8::1"):
        body = {"key": tenant.owner_key, "client_address": address}
        assert (await _verify(client, **body))["valid"] is True


async def test_verification_with_caller_authentication(
    client: httpx.AsyncClient, session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    tenant = await create_tenant(session)
    other = await create_tenant(session, "Other")
    application = await create_application(
        client, tenant, permissions=["contacts:read", "keyservice:verify"]
    )
    gateway = await create_key(client, tenant, application["id"], scopes=["keyservice:verify"])
    no_verify = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    checked = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    other_app = await create_application(client, other)
    foreign = await create_key(client, other, other_app["id"])

    async with client_for(make_app(verify_requires_auth=True)) as strict:
        response = await strict.post("/v1/verify", json={"key": checked["key"]})
        assert response.status_code == 401
        response = await strict.post(
            "/v1/verify", json={"key": checked["key"]}, headers=auth(no_verify["key"])
        )
        assert response.status_code == 403
        assert response.json()["scope"] == "keyservice:verify"
        response = await strict.post("/v1/verify", json={}, headers=auth(gateway["key"]))
        assert response.status_code == 422

        response = await strict.post(
            "/v1/verify", json={"key": checked["key"]}, headers=auth(gateway["key"])
        )
        assert response.json()["code"] == "VALID"
        assert response.json()["key"]["id"] == checked["id"]

        # Another account's key looks like no key at all: nothing about it comes back.
        for body in (
            {"key": foreign["key"]},
            {"key": foreign["key"], "account_id": str(other.account.id)},
        ):
            response = await strict.post("/v1/verify", json=body, headers=auth(gateway["key"]))
            assert response.json() == {
                "valid": False,
                "code": "NOT_FOUND",
                "detail": "The API key is not valid",
                "key": None,
                "rate_limit": None,
            }
            assert str(other.account.id) not in response.text or "account_id" in body

        # Nor that it was revoked or has expired.
        await client.post(f"/v1/keys/{foreign['id']}/revoke", headers=other.headers)
        response = await strict.post(
            "/v1/verify", json={"key": foreign["key"]}, headers=auth(gateway["key"])
        )
        assert response.json()["code"] == "NOT_FOUND"
        assert (await client.post("/v1/verify", json={"key": foreign["key"]})).json()[
            "code"
        ] == "REVOKED"  # its holder, unauthenticated, may know

    # Without the setting, a header key alongside a body key still authenticates the caller.
    response = await client.post(
        "/v1/verify", json={"key": foreign["key"]}, headers=auth(gateway["key"])
    )
    assert response.json()["code"] == "NOT_FOUND"


async def test_a_personal_key_answers_for_one_account_only(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    user = await create_user(
        session, accounts={first.account.id: Role.member, second.account.id: Role.admin}
    )
    key = await create_personal_key(session, user, scopes=["contacts:*", "deals:write"])

    as_member = await _verify(client, key=key, account_id=str(first.account.id))
    assert as_member["key"]["role"] == "member"  # type: ignore[index]
    assert as_member["key"]["scopes"] == ["contacts:read"]  # type: ignore[index]
    assert as_member["key"]["account_id"] == str(first.account.id)  # type: ignore[index]
    assert str(second.account.id) not in str(as_member)
    refused = await _verify(
        client, key=key, account_id=str(first.account.id), scopes=["deals:write"]
    )
    assert refused["code"] == "INSUFFICIENT_SCOPE"

    as_admin = await _verify(
        client, key=key, account_id=str(second.account.id), scopes=["deals:write"]
    )
    assert as_admin["code"] == "VALID"
    assert as_admin["key"]["scopes"] == ["contacts:*", "deals:write"]  # type: ignore[index]

"""The FastAPI guard of a downstream service, calling the real keyservice: which requests get
through, with which identity, and how the others are answered."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from keyservice_client import AsyncKeyservice, RateLimit
from keyservice_client.fastapi import KeyIdentity, KeyserviceGuard, require_key
from tests.support import (
    FAST_RETRY,
    Answer,
    Scripted,
    Server,
    TwoAccounts,
    free_port,
    new_key,
    unique,
)

PROBLEM = "application/problem+json"


def downstream(guard: KeyserviceGuard, *, install: bool = True) -> FastAPI:
    """A product's service: contacts need `contacts:read`, creating a deal `deals:write` and
    costs 5 tokens."""
    app = FastAPI()
    if install:
        guard.install(app)

    @app.get("/contacts/{contact_id}")
    async def contact(
        contact_id: str, key: KeyIdentity = Depends(require_key("contacts:read"))
    ) -> dict[str, Any]:
        return {
            "contact": contact_id,
            "key": key.key_id,
            "account": key.account_id,
            "application": key.application_id,
            "scopes": sorted(key.scopes),
            "name": key.verified.name if key.verified else None,
        }

    @app.post("/deals", status_code=201)
    async def create_deal(key: KeyIdentity = Depends(guard.require("deals:write", cost=5))) -> None:
        return None

    return app


def client_of(app: FastAPI, address: str = "203.0.113.9") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://downstream.test")


@pytest.fixture
async def service(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    guard = KeyserviceGuard(server.url)
    async with client_of(downstream(guard)) as client:
        yield client
    await guard.aclose()


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    return body


async def test_a_good_key_in_any_of_the_three_headers(
    service: httpx.AsyncClient, owner: AsyncKeyservice
) -> None:
    created = await new_key(owner, "contacts:read", "deals:read")
    account = await owner.account.get()
    for headers in (
        {"Authorization": f"Bearer {created.key}"},
        {"Authorization": created.key},
        {"x-api-key": created.key},
        {"Authorization": f"Bearer {created.key}", "x-api-key": created.key},  # the same key
    ):
        response = await service.get("/contacts/42", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "contact": "42",
            "key": created.id,
            "account": account.id,
            "application": created.application_id,
            "scopes": ["contacts:read", "deals:read"],
            "name": created.name,
        }
    usage = await owner.keys.usage(created.id)
    assert usage.key_id == created.id


async def test_no_key_is_401_with_a_challenge(service: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"x-api-key": " "}):
        response = await service.get("/contacts/42", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'
        body = problem(response)
        assert body["type"] == "urn:keyservice:problem:missing-key"
        assert body["instance"] == "/contacts/42"


async def test_two_different_keys_are_400(service: httpx.AsyncClient) -> None:
    response = await service.get(
        "/contacts/42", headers={"Authorization": "Bearer ks_live_one", "x-api-key": "ks_live_two"}
    )
    assert response.status_code == 400
    assert problem(response)["type"] == "urn:keyservice:problem:ambiguous-key"


async def test_bad_keys_are_401(service: httpx.AsyncClient, owner: AsyncKeyservice) -> None:
    created = await new_key(owner)
    await owner.keys.revoke(created.id)
    for key, slug in (
        ("ks_live_nope", "malformed-key"),
        ("k" * 600, "malformed-key"),
        (created.key, "revoked-key"),
    ):
        response = await service.get("/contacts/42", headers={"x-api-key": key})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
        assert problem(response)["type"] == f"urn:keyservice:problem:{slug}"
        assert key not in response.text


async def test_a_missing_scope_is_403(service: httpx.AsyncClient, owner: AsyncKeyservice) -> None:
    created = await new_key(owner, "contacts:read")
    response = await service.post("/deals", headers={"x-api-key": created.key})
    assert response.status_code == 403
    body = problem(response)
    assert body["type"] == "urn:keyservice:problem:insufficient-scope"
    assert "deals:write" in body["detail"]


async def test_rate_limits_pass_through(service: httpx.AsyncClient, owner: AsyncKeyservice) -> None:
    """Allowed answers carry the key's rate-limit headers; over the limit, a 429 with them
    and Retry-After. Creating a deal costs 5 of the key's 6 tokens."""
    application = await owner.applications.create(
        name=unique("Deals"), developer_email="dev@partner.example", permissions=["deals:write"]
    )
    created = await new_key(
        owner,
        "deals:write",
        application=application,
        rate_limit=RateLimit(limit=6, period_seconds=3600),
    )
    allowed = await service.post("/deals", headers={"x-api-key": created.key})
    assert allowed.status_code == 201
    assert allowed.headers["ratelimit-policy"] == '"rate";q=6;w=3600'
    assert allowed.headers["x-ratelimit-remaining"] == "1"
    refused = await service.post("/deals", headers={"x-api-key": created.key})
    assert refused.status_code == 429
    assert problem(refused)["type"] == "urn:keyservice:problem:rate-limited"
    assert refused.headers["ratelimit-policy"] == '"rate";q=6;w=3600'
    assert int(refused.headers["retry-after"]) > 0
    assert refused.headers["x-ratelimit-limit"] == "6"


async def test_a_users_key_must_name_its_account(
    service: httpx.AsyncClient, server: Server, two_accounts: TwoAccounts
) -> None:
    async with AsyncKeyservice(server.url, two_accounts.key, retry=FAST_RETRY) as user:
        personal = await user.personal_keys.create(name="Script", scopes=["contacts:read"])
    account_id = two_accounts.account_ids[1]
    response = await service.get("/contacts/1", headers={"x-api-key": personal.key})
    assert response.status_code == 400
    assert problem(response)["type"] == "urn:keyservice:problem:account-required"
    named = await service.get(
        "/contacts/1", headers={"x-api-key": personal.key, "X-Account-Id": account_id}
    )
    assert named.status_code == 200
    assert (named.json()["account"], named.json()["application"]) == (account_id, None)
    garbled = await service.get(
        "/contacts/1", headers={"x-api-key": personal.key, "X-Account-Id": "nope"}
    )
    assert garbled.status_code == 403
    assert problem(garbled)["type"] == "urn:keyservice:problem:account-forbidden"


async def test_unavailable_is_503_with_retry_after(scripted: Scripted) -> None:
    scripted.script(
        Answer(503, {"valid": False, "code": "UNAVAILABLE", "detail": "Down"}, {"retry-after": "7"})
    )
    guard = KeyserviceGuard(AsyncKeyservice(scripted.url, retry=FAST_RETRY))
    async with client_of(downstream(guard)) as client:
        response = await client.get("/contacts/1", headers={"x-api-key": "ks_live_whatever"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert problem(response)["type"] == "urn:keyservice:problem:unavailable"


async def test_keyservice_out_of_reach_is_503_and_logged_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = KeyserviceGuard(AsyncKeyservice(f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY))
    key = "ks_live_0123456789abcdefghijklmnopqrstuvwxyzAB"
    with caplog.at_level(logging.WARNING, logger="keyservice_client"):
        async with client_of(downstream(guard)) as client:
            response = await client.get("/contacts/1", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 503
    assert problem(response)["type"] == "urn:keyservice:problem:unavailable"
    assert "ConnectError" in caplog.text
    assert key not in caplog.text
    assert key not in response.text


async def test_with_a_caller_key_the_clients_address_is_sent(
    server: Server, owner: AsyncKeyservice, scripted: Scripted
) -> None:
    """keyservice counts `client_address` only from an authenticated caller: a guard sends it
    with its caller key, and not without."""
    gateway = await owner.personal_keys.create(
        name="Contacts service", scopes=["keyservice:verify"]
    )
    good = await new_key(owner, "contacts:read")
    guard = KeyserviceGuard(server.url, caller_key=gateway.key)
    app = downstream(guard)
    # A client of the service that keeps guessing is blocked, by its own address only.
    async with client_of(app, "203.0.113.50") as guesser:
        statuses = set()
        for _ in range(200):
            response = await guesser.get("/contacts/1", headers={"x-api-key": "ks_live_guess"})
            statuses.add(response.status_code)
            if response.status_code == 429:
                break
    assert statuses == {401, 429}
    assert problem(response)["type"] == "urn:keyservice:problem:too-many-failures"
    assert int(response.headers["retry-after"]) > 0
    async with client_of(app, "203.0.113.51") as other:
        assert (await other.get("/contacts/1", headers={"x-api-key": good.key})).status_code == 200
    await guard.aclose()

    # On the wire.
    for caller_key, sent in ((gateway.key, "203.0.113.52"), (None, None)):
        scripted.script(Answer(200, {"valid": False, "code": "NOT_FOUND"}))
        guard = KeyserviceGuard(scripted.url, caller_key=caller_key)
        async with client_of(downstream(guard), "203.0.113.52") as client:
            await client.get("/contacts/1", headers={"x-api-key": "ks_live_guess"})
        request = scripted.received[-1]
        body = json.loads(request.body)
        assert body.get("client_address") == sent
        assert body["endpoint"] == "GET /contacts/{contact_id}"
        assert request.headers.get("authorization") == (
            f"Bearer {caller_key}" if caller_key else None
        )
        await guard.aclose()


async def test_a_caller_key_keyservice_refuses_is_503(
    server: Server, owner: AsyncKeyservice
) -> None:
    """The service's own key is not the client's fault: refused, or over its own rate limit,
    the client gets a 503, not a 401, 403 or 429."""
    good = await new_key(owner, "contacts:read")
    not_a_gateway = await new_key(owner, "contacts:read")
    slow_gateway = await owner.personal_keys.create(
        name="Slow gateway",
        scopes=["keyservice:verify"],
        rate_limit=RateLimit(limit=1, period_seconds=3600),
    )
    refused = KeyserviceGuard(server.url, caller_key=not_a_gateway.key)
    limited = KeyserviceGuard(server.url, caller_key=slow_gateway.key)
    async with client_of(downstream(refused)) as client:
        response = await client.get("/contacts/1", headers={"x-api-key": good.key})
        assert response.status_code == 503
    async with client_of(downstream(limited)) as client:
        assert (await client.get("/contacts/1", headers={"x-api-key": good.key})).is_success
        response = await client.get("/contacts/1", headers={"x-api-key": good.key})
        assert response.status_code == 503
        assert "retry-after" in response.headers
    await refused.aclose()
    await limited.aclose()


async def test_forward_auth_mode(server: Server, owner: AsyncKeyservice) -> None:
    guard = KeyserviceGuard(server.url, via="forward-auth")
    created = await new_key(owner, "contacts:read")
    async with client_of(downstream(guard)) as client:
        allowed = await client.get("/contacts/7", headers={"Authorization": created.key})
        assert allowed.status_code == 200
        assert allowed.json()["key"] == created.id
        assert allowed.json()["scopes"] == ["contacts:read"]
        assert allowed.json()["name"] is None  # forward-auth does not say
        forbidden = await client.post("/deals", headers={"Authorization": created.key})
        assert forbidden.status_code == 403
        assert problem(forbidden)["type"] == "urn:keyservice:problem:insufficient-scope"
        await owner.keys.revoke(created.id)
        revoked = await client.get("/contacts/7", headers={"Authorization": created.key})
        assert revoked.status_code == 401
        assert problem(revoked)["type"] == "urn:keyservice:problem:revoked-key"
        assert revoked.headers["www-authenticate"] == 'Bearer realm="api", error="invalid_token"'
    await guard.aclose()


async def test_without_install_the_status_and_headers_are_still_right(server: Server) -> None:
    guard = KeyserviceGuard(server.url)
    app = downstream(guard, install=False)
    async with client_of(app) as client:
        response = await client.post("/deals")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'
        with pytest.raises(RuntimeError, match="install"):
            await client.get("/contacts/1", headers={"x-api-key": "ks_live_nope"})
    await guard.aclose()


def test_scopes_are_checked_when_the_route_is_declared() -> None:
    with pytest.raises(ValueError, match="not a scope"):
        require_key("Contacts Read")


@pytest.mark.parametrize(
    ("code", "status", "slug"),
    [
        ("MALFORMED", 401, "malformed-key"),
        ("NOT_FOUND", 401, "unknown-key"),
        ("REVOKED", 401, "revoked-key"),
        ("EXPIRED", 401, "expired-key"),
        ("INSUFFICIENT_SCOPE", 403, "insufficient-scope"),
        ("ACCOUNT_FORBIDDEN", 403, "account-forbidden"),
        ("ACCOUNT_REQUIRED", 400, "account-required"),
        ("RATE_LIMITED", 429, "rate-limited"),
        ("QUOTA_EXCEEDED", 429, "quota-exceeded"),
        ("UNAVAILABLE", 503, "unavailable"),
        ("A_CODE_OF_A_NEWER_SERVER", 401, "unauthorized"),  # refused all the same
    ],
)
def test_every_refusal_has_its_answer(code: str, status: int, slug: str) -> None:
    """The whole table, EXPIRED included (keyservice cannot issue a key that has expired)."""
    guard = KeyserviceGuard("http://127.0.0.1:8000")
    refusal = guard._verdict_refusal(code, None, {"Retry-After": "3"})
    assert (refusal.status_code, refusal.problem["type"]) == (
        status,
        f"urn:keyservice:problem:{slug}",
    )
    headers = refusal.headers or {}
    assert headers["Retry-After"] == "3"
    assert ("WWW-Authenticate" in headers) == (status == 401)

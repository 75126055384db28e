"""Rate limits and quotas: where they come from, and how every verification path enforces them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import auth, create_application, create_key, create_limited_key, create_tenant


async def _verify(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    response = await client.post("/v1/verify", json={"key": key, **body})
    assert response.status_code == 200, response.text
    return response


async def test_limits_are_inherited_and_overridden(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(rate_limit=1000, rate_period_seconds=60, monthly_quota=50_000)
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        application = await create_application(client, tenant)
        assert application["rate_limit"] is None  # inherits the deployment's
        plain = await create_key(client, tenant, application["id"])
        policy = (await _verify(client, plain["key"])).headers["ratelimit-policy"]
        assert policy == '"rate";q=1000;w=60, "month";q=50000;w=2592000'

        response = await client.patch(
            f"/v1/applications/{application['id']}",
            headers=tenant.headers,
            json={"rate_limit": {"limit": 100, "period_seconds": 10}, "monthly_quota": 900},
        )
        assert response.json()["rate_limit"] == {"limit": 100, "period_seconds": 10, "burst": 100}
        own = await create_key(
            client,
            tenant,
            application["id"],
            rate_limit={"limit": 5, "period_seconds": 1, "burst": 2},
        )
        assert own["rate_limit"] == {"limit": 5, "period_seconds": 1, "burst": 2}
        assert own["monthly_quota"] is None

        state = (await _verify(client, plain["key"])).json()["rate_limit"]
        assert (state["limit"], state["period_seconds"], state["burst"]) == (100, 10, 100)
        assert state["monthly_quota"] == 900
        state = (await _verify(client, own["key"])).json()["rate_limit"]
        assert (state["limit"], state["period_seconds"], state["burst"]) == (5, 1, 2)
        assert state["monthly_quota"] == 900  # the quota is inherited apart

        # null gives the key back to its application's limits.
        response = await client.patch(
            f"/v1/keys/{own['id']}", headers=tenant.headers, json={"rate_limit": None}
        )
        assert response.json()["rate_limit"] is None
        state = (await _verify(client, own["key"])).json()["rate_limit"]
        assert state["limit"] == 100


async def test_verify_refuses_beyond_the_limit_and_says_so(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    key = await create_limited_key(client, session, {"limit": 3, "period_seconds": 60})
    for remaining in (2, 1, 0):
        response = await _verify(client, key)
        assert response.json()["code"] == "VALID"
        assert response.json()["rate_limit"]["remaining"] == remaining
        assert response.headers["x-ratelimit-limit"] == "3"
        assert response.headers["x-ratelimit-remaining"] == str(remaining)
        assert response.headers["ratelimit"].startswith(f'"rate";r={remaining};t=')
    response = await _verify(client, key)
    body = response.json()
    assert body["valid"] is False
    assert body["code"] == "RATE_LIMITED"
    assert body["key"] is None
    # One token comes back every 20 seconds.
    assert 1 <= body["rate_limit"]["retry_after"] <= 20
    assert response.headers["retry-after"] == str(body["rate_limit"]["retry_after"])
    assert response.headers["ratelimit-policy"] == '"rate";q=3;w=60'
    assert response.headers["x-ratelimit-remaining"] == "0"


async def test_refused_requests_spend_nothing(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    key = await create_limited_key(
        client, session, {"limit": 2, "period_seconds": 3600}, scopes=["contacts:read"]
    )
    for _ in range(5):
        refused = await _verify(client, key, scopes=["deals:write"])
        assert refused.json()["code"] == "INSUFFICIENT_SCOPE"
    codes = [(await _verify(client, key)).json()["code"] for _ in range(3)]
    assert codes == ["VALID", "VALID", "RATE_LIMITED"]
    # Refused by the limit, it still spends nothing: the bucket stays empty, not negative.
    assert (await _verify(client, key, cost=1)).json()["code"] == "RATE_LIMITED"


async def test_cost_spends_several_tokens(client: httpx.AsyncClient, session: AsyncSession) -> None:
    key = await create_limited_key(client, session, {"limit": 10, "period_seconds": 3600})
    assert (await _verify(client, key, cost=7)).json()["rate_limit"]["remaining"] == 3
    assert (await _verify(client, key, cost=4)).json()["code"] == "RATE_LIMITED"
    assert (await _verify(client, key, cost=3)).json()["code"] == "VALID"
    response = await client.post("/v1/verify", json={"key": key, "cost": 0})
    assert response.status_code == 422


async def test_http_paths_answer_429(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["contacts:read", "keyservice:account:read"]
    )
    key = (
        await create_key(
            client,
            tenant,
            application["id"],
            scopes=["contacts:read", "keyservice:account:read"],
            rate_limit={"limit": 2, "period_seconds": 3600},
        )
    )["key"]
    response = await client.get("/v1/forward-auth/v1/contacts", headers=auth(key))
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "1"
    assert response.headers["ratelimit-policy"] == '"rate";q=2;w=3600'
    response = await client.get("/v1/account", headers=auth(key))
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining"] == "0"
    for request in (
        client.get("/v1/forward-auth/v1/contacts", headers=auth(key)),
        client.get("/v1/account", headers=auth(key)),
    ):
        response = await request
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:keyservice:problem:rate-limited"
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["x-ratelimit-remaining"] == "0"


async def test_monthly_quota(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, monthly_quota=5)
    created = await create_key(client, tenant, application["id"])
    states = [(await _verify(client, created["key"])).json() for _ in range(6)]
    assert [s["code"] for s in states] == ["VALID"] * 5 + ["QUOTA_EXCEEDED"]
    refused = states[-1]["rate_limit"]
    assert refused["quota_remaining"] == 0
    assert refused["retry_after"] == refused["quota_reset_seconds"] > 0

    response = await client.get("/v1/forward-auth", headers=auth(created["key"]))
    assert response.status_code == 429
    assert response.json()["type"] == "urn:keyservice:problem:quota-exceeded"
    assert response.headers["ratelimit-policy"] == '"month";q=5;w=2592000'
    assert response.headers["ratelimit"].startswith('"month";r=0;t=')

    await app.state.verifier.usage.flush()
    events = (
        await client.get("/v1/events", params={"type": "usage.threshold"}, headers=tenant.headers)
    ).json()["data"]
    assert sorted(e["data"]["percent"] for e in events) == [80, 100]
    assert {e["key_id"] for e in events} == {created["id"]}
    # Crossing again in the same month records nothing new.
    for _ in range(3):
        await _verify(client, created["key"])
    await app.state.verifier.usage.flush()
    again = (
        await client.get("/v1/events", params={"type": "usage.threshold"}, headers=tenant.headers)
    ).json()["data"]
    assert len(again) == 2

    # Raising the quota lets the key through at once.
    await client.patch(
        f"/v1/keys/{created['id']}", headers=tenant.headers, json={"monthly_quota": 10}
    )
    assert (await _verify(client, created["key"])).json()["code"] == "VALID"


async def test_tokens_come_back_at_the_rate(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    key = await create_limited_key(client, session, {"limit": 10, "period_seconds": 1, "burst": 1})
    assert (await _verify(client, key)).json()["code"] == "VALID"
    refused = (await _verify(client, key)).json()
    assert refused["code"] == "RATE_LIMITED"
    await asyncio.sleep(0.25)  # a token every 0.1 s; the burst holds one
    assert (await _verify(client, key)).json()["code"] == "VALID"

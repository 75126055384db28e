"""Guessing keys: a client address that keeps failing is refused for a while; others are not."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import Tenant, auth, create_application, create_key, create_tenant
from keyservice.security import Environment, generate_key
from keyservice.verification.throttle import FailureThrottle


async def test_failing_client_gets_429_and_others_do_not(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(verify_failures_per_minute=5, verify_block_seconds=30)
    now = [0.0]
    app.state.verifier.throttle = FailureThrottle(
        per_minute=5, block_seconds=30, clock=lambda: now[0]
    )
    async with client_for(app, "192.0.2.66") as attacker, client_for(app, "192.0.2.1") as honest:
        tenant = await create_tenant(session)
        application = await create_application(honest, tenant)
        key = (await create_key(honest, tenant, application["id"]))["key"]

        for n in range(5):
            guess = generate_key("ks", Environment.live) if n % 2 else "garbage"
            result = (await attacker.post("/v1/verify", json={"key": guess})).json()
            assert result["code"] in ("MALFORMED", "NOT_FOUND")
        for request in (
            attacker.post("/v1/verify", json={"key": "garbage"}),
            attacker.post("/v1/verify", json={"key": key}),  # even a good key, for a while
            attacker.get("/v1/forward-auth", headers=auth(key)),
            attacker.get("/v1/account", headers=auth("garbage")),
        ):
            response = await request
            assert response.status_code == 429
            assert response.json()["type"] == "urn:keyservice:problem:too-many-failures"
            assert int(response.headers["retry-after"]) == 30

        # An authenticated gateway names its own client: throttled per that address, not the
        # gateway's.
        gateway = await _gateway_key(honest, tenant)
        result = await honest.post(
            "/v1/verify",
            json={"key": key, "client_address": "192.0.2.66"},
            headers=auth(gateway),
        )
        assert result.status_code == 429
        assert (await honest.post("/v1/verify", json={"key": key})).json()["code"] == "VALID"
        assert (await honest.get("/v1/forward-auth", headers=auth(key))).status_code == 200

        now[0] = 31.0
        assert (await attacker.post("/v1/verify", json={"key": key})).json()["code"] == "VALID"


async def test_failures_refill_over_time(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app()
    now = [0.0]
    app.state.verifier.throttle = FailureThrottle(
        per_minute=6, block_seconds=30, clock=lambda: now[0]
    )
    async with client_for(app) as client:
        for _ in range(20):
            response = await client.post("/v1/verify", json={"key": "garbage"})
            assert response.status_code == 200
            now[0] += 10.0  # one failure every 10 s is the allowed rate


async def _gateway_key(client: httpx.AsyncClient, tenant: Tenant) -> str:
    """A key of the tenant's that may call /v1/verify as an authenticated caller."""
    application = await create_application(
        client, tenant, name="Gateway", permissions=["keyservice:verify"]
    )
    created = await create_key(client, tenant, application["id"], scopes=["keyservice:verify"])
    return str(created["key"])


async def test_an_anonymous_callers_client_address_counts_for_nothing(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    """Naming another client's address neither gets that client blocked nor escapes the
    throttle: the connection's address is counted."""
    app = make_app(verify_failures_per_minute=5, verify_block_seconds=30)
    async with client_for(app, "192.0.2.66") as attacker, client_for(app, "192.0.2.1") as victim:
        tenant = await create_tenant(session)
        application = await create_application(victim, tenant)
        key = (await create_key(victim, tenant, application["id"]))["key"]
        for n in range(5):
            # A new address named each time, and the victim's: neither is what counts.
            named = "192.0.2.1" if n % 2 else f"198.51.100.{n}"
            result = await attacker.post(
                "/v1/verify", json={"key": "garbage", "client_address": named}
            )
            assert result.json()["code"] == "MALFORMED"
        blocked = await attacker.post(
            "/v1/verify", json={"key": "garbage", "client_address": "198.51.100.99"}
        )
        assert blocked.status_code == 429
        # The victim's own requests, through the gateway-less path and forward-auth, go on.
        assert (await victim.post("/v1/verify", json={"key": key})).json()["code"] == "VALID"
        assert (await victim.get("/v1/forward-auth", headers=auth(key))).status_code == 200

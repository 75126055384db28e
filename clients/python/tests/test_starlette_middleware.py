"""The guard as middleware of a plain Starlette app, calling the real keyservice."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from keyservice_client import AsyncKeyservice, RateLimit
from keyservice_client.starlette import KeyserviceGuard, KeyserviceMiddleware, key_identity
from tests.support import Server, new_key


async def contacts(request: Request) -> JSONResponse:
    identity = key_identity(request)
    return JSONResponse({"account": identity.account_id, "scopes": sorted(identity.scopes)})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def no_guard(request: Request) -> PlainTextResponse:
    key_identity(request)
    return PlainTextResponse("unreachable")


@pytest.fixture
async def service(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    guard = KeyserviceGuard(server.url)
    app = Starlette(
        routes=[
            Route("/contacts", contacts),
            Route("/healthz", health),
            Route("/docs/index", health),
            Route("/docs-and-more", no_guard),
        ],
        middleware=[
            Middleware(
                KeyserviceMiddleware,
                guard=guard,
                scopes=["contacts:read"],
                public_paths=["/healthz", "/docs/"],
            )
        ],
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.20", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://downstream.test") as client:
        yield client
    await guard.aclose()


async def test_a_good_key_reaches_the_route_with_its_identity(
    service: httpx.AsyncClient, owner: AsyncKeyservice
) -> None:
    created = await new_key(
        owner, "contacts:read", rate_limit=RateLimit(limit=100, period_seconds=60)
    )
    response = await service.get("/contacts", headers={"Authorization": f"Bearer {created.key}"})
    assert response.status_code == 200
    assert response.json() == {
        "account": (await owner.account.get()).id,
        "scopes": ["contacts:read"],
    }
    assert response.headers["ratelimit-policy"] == '"rate";q=100;w=60'


async def test_refusals_are_answered_before_the_app(
    service: httpx.AsyncClient, owner: AsyncKeyservice
) -> None:
    missing = await service.get("/contacts")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["type"] == "urn:keyservice:problem:missing-key"
    assert missing.headers["www-authenticate"] == 'Bearer realm="api"'

    wrong_scope = await new_key(owner, "deals:read")
    forbidden = await service.get("/contacts", headers={"x-api-key": wrong_scope.key})
    assert forbidden.status_code == 403
    assert forbidden.json()["type"] == "urn:keyservice:problem:insufficient-scope"
    assert forbidden.json()["instance"] == "/contacts"


async def test_public_paths_need_no_key(service: httpx.AsyncClient) -> None:
    assert (await service.get("/healthz")).text == "ok"
    assert (await service.get("/docs/index")).text == "ok"
    # A prefix covers what is below it only.
    assert (await service.get("/docs-and-more")).status_code == 401


def test_a_route_outside_the_middleware_has_no_identity() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    with pytest.raises(LookupError, match="KeyserviceMiddleware"):
        key_identity(request)

"""POST /v1/verify is answered ahead of FastAPI's routing; the documented route must answer the
same, request for request, so that the two are one behaviour."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import auth, create_application, create_key, create_tenant
from keyservice.verification.fastpath import VerifyFastPath

COMPARED_HEADERS = (
    "content-type",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-remaining",
)


def _without_fast_path(app: FastAPI) -> FastAPI:
    app.user_middleware = [m for m in app.user_middleware if m.cls != VerifyFastPath]  # type: ignore[comparison-overlap]
    return app


async def test_the_fast_path_and_the_route_answer_alike(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    fast, routed = make_app(), _without_fast_path(make_app())
    async with client_for(fast) as a, client_for(routed) as b:
        tenant = await create_tenant(session)
        application = await create_application(a, tenant)
        limited = (
            await create_key(
                a, tenant, application["id"], rate_limit={"limit": 2, "period_seconds": 3600}
            )
        )["key"]
        other = (await create_key(a, tenant, application["id"]))["key"]
        requests: list[tuple[dict[str, str], bytes]] = [
            ({"content-type": "application/json"}, b'{"key": "%s"}' % limited.encode()),
            ({"content-type": "application/json"}, b'{"key": "%s"}' % limited.encode()),
            (
                {"content-type": "application/json"},
                b'{"key": "%s", "scopes": ["deals:write"]}' % other.encode(),
            ),
            ({"content-type": "application/json"}, b'{"key": "nonsense"}'),
            ({"content-type": "application/json"}, b"{}"),
            ({"content-type": "application/json"}, b"not json"),
            ({"content-type": "application/json"}, b'{"key": 42}'),
            ({"content-type": "text/plain"}, b'{"key": "x"}'),
            (auth(other) | {"x-api-key": limited}, b"{}"),
            (auth(other), b"{}"),
            ({"content-type": "application/json"}, b'{"key": "%s"}' % ("x" * 600).encode()),
            ({"content-type": "application/json"}, b""),
            ({"content-type": "application/json"}, b'\xef\xbb\xbf{"key": "%s"}' % other.encode()),
            ({"content-type": "application/json"}, json.dumps({"key": other}).encode("utf-16")),
        ]
        for headers, body in requests:
            first = await a.post("/v1/verify", content=body, headers=headers)
            second = await b.post("/v1/verify", content=body, headers=headers)
            assert first.status_code == second.status_code, body
            if first.status_code == 200:
                got, want = first.json(), second.json()
                if got.get("rate_limit"):
                    # Two instances, two buckets' worth of views: compare what must agree.
                    got["rate_limit"].pop("reset_seconds")
                    want["rate_limit"].pop("reset_seconds")
                    got["rate_limit"].pop("remaining")
                    want["rate_limit"].pop("remaining")
                assert got == want, body
            elif first.status_code == 422:
                # The same problem; the parser's wording of a JSON syntax error may differ.
                got, want = first.json(), second.json()
                assert (got["type"], got["title"]) == (want["type"], want["title"]), body
                kinds = [[e["type"] for e in p.get("errors", [])] for p in (got, want)]
                assert kinds[0] == kinds[1], body
            else:
                assert first.json() == second.json(), body
            if first.status_code == 200:
                # The same bytes: the fast path sends its answer without a Response.
                assert first.content == second.content or first.json().get("rate_limit"), body
                assert first.headers["content-length"] == str(len(first.content))
            for name in COMPARED_HEADERS[:2]:
                assert first.headers.get(name) == second.headers.get(name), (name, body)
            for name in COMPARED_HEADERS[2:]:
                assert (name in first.headers) == (name in second.headers), (name, body)


async def test_a_body_sent_in_pieces_is_read_whole(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app()
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        application = await create_application(client, tenant)
        key = (await create_key(client, tenant, application["id"]))["key"]
        body = json.dumps({"key": key, "scopes": ["contacts:read"]}).encode()

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 7):
                yield body[start : start + 7]

        response = await client.post(
            "/v1/verify", content=pieces(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert response.json()["code"] == "VALID"

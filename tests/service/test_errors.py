"""Every error is an RFC 9457 problem: no HTML, no stack trace, no echo of what was sent."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_application, create_tenant


def _is_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:keyservice:problem:{slug}"
    assert problem["status"] == status
    assert problem["title"]
    assert "Traceback" not in response.text


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    _is_problem(await client.get("/v1/nothing-here"), 404, "not-found")
    _is_problem(await client.put("/healthz"), 405, "method-not-allowed")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/account", "GET, PATCH"),
        ("OPTIONS", "/v1/applications", "GET, POST"),
        ("POST", "/v1/keys/00000000-0000-4000-8000-000000000000", "GET, PATCH"),
        ("PUT", "/v1/account/members/00000000-0000-4000-8000-000000000000", "DELETE, GET, PATCH"),
        ("GET", "/v1/sessions", "POST"),
    ],
)
async def test_method_not_allowed_lists_every_method_of_the_path(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    # The path is served by one route per method; Allow names them all, not the first one's.
    response = await client.request(method, path)
    _is_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allow


async def test_malformed_json_is_422_without_echo(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/applications",
        headers=tenant.headers | {"content-type": "application/json"},
        content=b'{"name": "secret-value-123", ',
    )
    _is_problem(response, 422, "validation-error")
    assert "secret-value-123" not in response.text


async def test_wrong_types_are_422_naming_the_field(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/applications",
        headers=tenant.headers,
        json={"name": ["not", "a", "string"], "developer_email": "dev@example.com"},
    )
    _is_problem(response, 422, "validation-error")
    assert response.json()["errors"][0]["loc"] == ["body", "name"]
    assert "input" not in response.json()["errors"][0]


async def test_oversized_bodies_are_413(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    big = {"name": "x", "developer_email": "a@example.com", "description": "x" * 70_000}
    _is_problem(
        await client.post("/v1/applications", headers=tenant.headers, json=big),
        413,
        "payload-too-large",
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    # Streamed without a Content-Length: counted as it arrives.
    response = await client.post(
        "/v1/applications",
        headers=tenant.headers | {"content-type": "application/json"},
        content=chunks(),
    )
    _is_problem(response, 413, "payload-too-large")


@pytest.mark.parametrize(
    "params",
    [{"limit": "101"}, {"limit": "0"}, {"limit": "many"}, {"cursor": "not-a-cursor"}],
)
async def test_page_parameters_are_bounded(
    client: httpx.AsyncClient, session: AsyncSession, params: dict[str, str]
) -> None:
    tenant = await create_tenant(session)
    response = await client.get("/v1/keys", params=params, headers=tenant.headers)
    _is_problem(response, 422, "validation-error")


async def test_malformed_path_ids_are_422(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    response = await client.get("/v1/keys/not-a-uuid", headers=tenant.headers)
    _is_problem(response, 422, "validation-error")


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "2026-01-01T00:00:00|00000000-0000-4000-8000-000000000000",
        "0001-01-01T00:00:00+14:00|00000000-0000-4000-8000-000000000000",
        "2026-01-01T00:00:00+00:00|not-a-uuid",
    ],
    ids=["naive", "overflow", "id"],
)
async def test_forged_cursors_are_422(
    client: httpx.AsyncClient, session: AsyncSession, cursor: str
) -> None:
    tenant = await create_tenant(session)
    response = await client.get(
        "/v1/keys", params={"cursor": _cursor(cursor)}, headers=tenant.headers
    )
    _is_problem(response, 422, "validation-error")


async def test_extreme_expiry_is_422(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    for when in ("9999-12-31T23:59:59-05:00", "9500-01-01T00:00:00Z"):
        response = await client.post(
            f"/v1/applications/{application['id']}/keys",
            headers=tenant.headers,
            json={"name": "k", "scopes": ["contacts:read"], "expires_at": when},
        )
        _is_problem(response, 422, "validation-error")


async def test_control_characters_are_422_on_every_backend(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    attempts = [
        ("POST", "/v1/applications", {"name": "a\u0000b", "developer_email": "a@example.com"}),
        (
            "POST",
            "/v1/applications",
            {"name": "ok", "developer_email": "a@example.com", "description": "nul \u0000 here"},
        ),
        ("PATCH", "/v1/account", {"name": "bell\u0007"}),
        (
            "POST",
            f"/v1/applications/{application['id']}/keys",
            {"name": "k\u0000", "scopes": ["contacts:read"]},
        ),
        (
            "POST",
            f"/v1/applications/{application['id']}/keys",
            {"name": "k", "scopes": ["contacts:read\u0000"]},
        ),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=tenant.headers)
        _is_problem(response, 422, "validation-error")
    response = await client.get(
        "/v1/audit-events", params={"action": "key.\u0000"}, headers=tenant.headers
    )
    _is_problem(response, 422, "validation-error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/sessions"),
        ("POST", "/v1/applications"),
        ("PATCH", "/v1/account"),
        ("POST", "/v1/users/me/keys"),
    ],
)
@pytest.mark.parametrize(
    "body", [b'{"name": "caf\xe9"}', b"[" * 30_000], ids=["latin-1", "deep-nesting"]
)
async def test_a_body_that_is_not_json_is_the_documented_422(
    client: httpx.AsyncClient, session: AsyncSession, method: str, path: str, body: bytes
) -> None:
    tenant = await create_tenant(session)
    response = await client.request(
        method, path, content=body, headers=tenant.headers | {"content-type": "application/json"}
    )
    _is_problem(response, 422, "validation-error")
    assert response.json()["errors"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("content_type", "received"),
    [
        (None, "the request has no Content-Type"),
        ("text/plain", "the request's Content-Type is 'text/plain'"),
        # What `curl -d` sends unless told otherwise.
        (
            "application/x-www-form-urlencoded",
            "the request's Content-Type is 'application/x-www-form-urlencoded'",
        ),
    ],
    ids=["none", "text", "form"],
)
async def test_a_json_body_without_its_content_type_is_told_to_send_json(
    client: httpx.AsyncClient, session: AsyncSession, content_type: str | None, received: str
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    headers = dict(tenant.headers)
    if content_type is not None:
        headers["content-type"] = content_type
    attempts = [
        ("POST", "/v1/applications", '{"name": "x", "developer_email": "a@example.com"}'),
        ("POST", f"/v1/applications/{application['id']}/keys", '{"name": "k", "scopes": []}'),
        ("PATCH", "/v1/account", '{"name": "Acme"}'),
        ("POST", "/v1/users/me/keys", '{"name": "k", "scopes": []}'),
        ("POST", "/v1/sessions", '{"email": "a@example.com", "password": "a long password"}'),
        # The fast path answers /v1/verify ahead of FastAPI: in the same words.
        ("POST", "/v1/verify", '{"key": "ks_live_x", "endpoint": "a long password"}'),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, content=body.encode(), headers=headers)
        _is_problem(response, 422, "validation-error")
        problem = response.json()
        assert problem["detail"] == (
            f"body: send JSON, with the header 'Content-Type: application/json' ({received})"
        ), path
        assert problem["errors"] == [
            {
                "loc": ["body"],
                "msg": "send JSON, with the header 'Content-Type: application/json'",
                "type": "model_attributes_type",
            }
        ]
        assert "long password" not in response.text


async def test_json_of_the_wrong_shape_is_not_told_to_send_json(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post("/v1/applications", headers=tenant.headers, json=["x"])
    _is_problem(response, 422, "validation-error")
    assert "Content-Type" not in response.json()["detail"]

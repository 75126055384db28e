from __future__ import annotations

import httpx
from fastapi import FastAPI


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_the_schema_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_not_ready_when_the_schema_lags(client: httpx.AsyncClient, app: FastAPI) -> None:
    app.state.head_revision = "a-newer-revision"
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["type"] == "urn:keyservice:problem:unavailable"
    assert "keyservice migrate" in response.json()["detail"]


async def test_scope_catalogue(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/scopes")).json()
    assert "contacts:read" in body["product"]
    assert "keyservice:keys:write" in body["keyservice"]

"""One bad request must not stop metering: text that no database stores is refused where it
enters, or made storable; a row the database refuses anyway is dropped alone, never taking the
others with it."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import auth, create_application, create_key, create_tenant
from keyservice.models import UsageCounter, utcnow
from keyservice.usage.recorder import UsageRecorder


@pytest.mark.parametrize(
    "raw_endpoint",
    [
        b'"GET /a\\u0000b"',  # NUL: PostgreSQL refuses it in text and in JSON
        b'"GET /a\\ud800b"',  # a lone surrogate: no character, no UTF-8 for it
        b'"GET /a\\nb"',
    ],
)
async def test_verify_refuses_an_endpoint_no_database_can_store(
    client: httpx.AsyncClient, raw_endpoint: bytes
) -> None:
    body = b'{"key": "ks_live_x", "endpoint": ' + raw_endpoint + b"}"
    response = await client.post(
        "/v1/verify", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "endpoint"]


async def _counters(session: AsyncSession, key_id: str) -> dict[str, int]:
    rows = await session.execute(
        select(UsageCounter.endpoint, UsageCounter.allowed).where(
            UsageCounter.key_id == uuid.UUID(key_id)
        )
    )
    return {str(endpoint): int(allowed) for endpoint, allowed in rows.all()}


async def test_a_proxied_path_with_nul_is_counted_and_metering_goes_on(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    first = await create_key(client, tenant, application["id"])
    second = await create_key(client, tenant, application["id"])
    response = await client.get("/v1/forward-auth/a%00b", headers=auth(first["key"]))
    assert response.status_code == 200
    refused = await client.get(
        "/v1/forward-auth/x%00y?scopes=deals:write", headers=auth(first["key"])
    )
    assert refused.status_code == 403
    await client.post("/v1/verify", json={"key": second["key"], "endpoint": "GET /v1/contacts"})
    await app.state.verifier.usage.flush()
    # A second flush after the first: the recorder is not stuck on anything.
    await client.post("/v1/verify", json={"key": second["key"], "endpoint": "GET /v1/contacts"})
    await app.state.verifier.usage.flush()

    assert await _counters(session, first["id"]) == {"GET /a\ufffdb": 1, "GET /x\ufffdy": 0}
    assert await _counters(session, second["id"]) == {"GET /v1/contacts": 2}
    assert app.state.verifier.usage.dropped_rows == 0


async def test_a_row_the_database_refuses_is_dropped_alone(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    client: httpx.AsyncClient,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the entry checks (a bug, a new caller), a row that one backend refuses is isolated:
    every other row of the flush is written, the refused one is counted and logged by key."""
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    keys = [await create_key(client, tenant, application["id"]) for _ in range(5)]
    recorder = UsageRecorder(sessionmaker, max_endpoints=50)
    for number, key in enumerate(keys):
        for endpoint in ("GET /a", "GET /b", "GET /c"):
            recorder.record(uuid.UUID(key["id"]), tenant.account.id, endpoint, allowed=True)
        if number == 3:
            # PostgreSQL refuses NUL; SQLite stores it, so there nothing is to be dropped.
            recorder.record(
                uuid.UUID(key["id"]), tenant.account.id, "GET /secret\x00", allowed=True
            )
    with caplog.at_level(logging.ERROR, logger="keyservice"):
        written = await recorder.flush()

    refused = 1 if backend == "postgres" else 0
    assert written == 15 + 1 - refused
    assert recorder.dropped_rows == refused
    for key in keys:
        counters = await _counters(session, key["id"])
        assert {e: counters[e] for e in ("GET /a", "GET /b", "GET /c")} == {
            "GET /a": 1,
            "GET /b": 1,
            "GET /c": 1,
        }
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == refused
    for message in errors:
        assert keys[3]["id"] in message
        assert "secret" not in message

    # The next flush starts clean: nothing was kept back.
    recorder.record(uuid.UUID(keys[0]["id"]), tenant.account.id, "GET /a", allowed=True)
    assert await recorder.flush() == 1
    assert (await _counters(session, keys[0]["id"]))["GET /a"] == 2
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == refused


async def test_usage_kept_for_later_is_bounded(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    recorder = UsageRecorder(sessionmaker, max_endpoints=1000, max_pending_rows=100)
    key_id, account_id = uuid.uuid4(), uuid.uuid4()
    for number in range(150):
        recorder.record(key_id, account_id, f"GET /{number}", allowed=True)
    # Counting into a row that exists costs nothing more, and is never dropped.
    recorder.record(key_id, account_id, "GET /0", allowed=True)
    assert recorder.dropped_rows == 50
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    assert recorder._batch.counts[(key_id, account_id, "GET /0", hour)][0] == 2


async def test_deeply_nested_json_is_a_422_that_quotes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    key = (await create_key(client, tenant, application["id"]))["key"]
    nested = b"[" * 20_000 + b"]" * 20_000
    body = b'{"key": "' + key.encode() + b'", "scopes": ' + nested + b"}"
    with caplog.at_level(logging.DEBUG):
        response = await client.post(
            "/v1/verify", content=body, headers={"content-type": "application/json"}
        )
        # The other JSON routes too (FastAPI's own body parsing).
        other = await client.post(
            "/v1/applications",
            content=body,
            headers={**tenant.headers, "content-type": "application/json"},
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert key[:12] not in response.text
    assert 400 <= other.status_code < 500
    assert key[:12] not in other.text
    assert not [r for r in caplog.records if key[:12] in r.getMessage() or r.exc_info]
    # And the key still verifies: nothing was counted against it.
    assert (await client.post("/v1/verify", json={"key": key})).json()["code"] == "VALID"

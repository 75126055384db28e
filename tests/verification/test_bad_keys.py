"""Bad keys of each kind get 401 with a stable problem type; garbage never reaches the database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, create_application, create_key, create_tenant
from keyservice.models import ApiKey, utcnow
from keyservice.security import Environment, generate_key

VALID = generate_key("ks", Environment.live)


@pytest.mark.parametrize(
    "bad_key",
    [
        "xx" + VALID[2:],  # another deployment's prefix
        VALID.replace("_live_", "_prod_"),  # no such environment
        VALID[:-1],  # truncated copy
        VALID + "x",  # trailing junk
        VALID[:12] + "!" + VALID[13:],  # outside base62
        VALID[:-6] + ("000000" if VALID[-6:] != "000000" else "000001"),  # checksum
        "hunter2",
        "x" * 5000,
    ],
    ids=["prefix", "environment", "short", "long", "alphabet", "checksum", "word", "huge"],
)
async def test_malformed_keys_are_refused_without_a_query(
    client: httpx.AsyncClient, sql_statements: list[str], bad_key: str
) -> None:
    response = await client.get("/v1/account", headers=auth(bad_key))
    assert response.status_code == 401
    assert response.json()["type"] == "urn:keyservice:problem:malformed-key"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert sql_statements == []
    assert bad_key[:40] not in response.text


async def test_well_formed_unknown_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/account", headers=auth(generate_key("ks", Environment.live)))
    assert response.status_code == 401
    assert response.json()["type"] == "urn:keyservice:problem:unknown-key"


async def test_expired_key_is_refused(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(
        client, tenant, permissions=["keyservice:applications:read"]
    )
    created = await create_key(
        client, tenant, application["id"], scopes=["keyservice:applications:read"], expires_in="30d"
    )
    assert (await client.get("/v1/applications", headers=auth(created["key"]))).status_code == 200

    # Thirty days later, the cached key is refused without anyone touching it.
    app.state.verifier.clock = lambda: utcnow() + timedelta(days=30, seconds=1)
    response = await client.get("/v1/applications", headers=auth(created["key"]))
    assert response.status_code == 401
    assert response.json()["type"] == "urn:keyservice:problem:expired-key"

    app.state.verifier.clock = utcnow
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == uuid.UUID(created["id"]))
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await session.commit()
    listed = (await client.get(f"/v1/keys/{created['id']}", headers=tenant.headers)).json()
    assert listed["status"] == "expired"


@pytest.mark.parametrize(
    ("sent", "reason"),
    [
        (f" {VALID}", "the key has surrounding whitespace"),
        (f"{VALID}\n", "the key has surrounding whitespace"),
        (f'"{VALID}"', "the key is wrapped in quotes"),
        (f"'{VALID}'", "the key is wrapped in quotes"),
        (f'" {VALID}"', "the key is wrapped in quotes"),
    ],
    ids=["leading-space", "trailing-newline", "double-quotes", "single-quotes", "quoted-space"],
)
async def test_a_key_copied_with_what_surrounded_it_says_so(
    client: httpx.AsyncClient, sent: str, reason: str
) -> None:
    result = (await client.post("/v1/verify", json={"key": sent})).json()
    assert result["code"] == "MALFORMED"
    assert reason in result["detail"]
    assert "length" not in result["detail"]
    assert "prefix" not in result["detail"]
    assert VALID[8:] not in str(result)


async def test_a_quoted_key_in_a_header_says_so(client: httpx.AsyncClient) -> None:
    for headers in (auth(f'"{VALID}"'), {"x-api-key": f"'{VALID}'"}):
        response = await client.get("/v1/account", headers=headers)
        assert response.status_code == 401
        problem = response.json()
        assert problem["type"] == "urn:keyservice:problem:malformed-key"
        assert "the key is wrapped in quotes" in problem["detail"]
        assert VALID[8:] not in response.text

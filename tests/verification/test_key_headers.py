"""A key is read from Authorization (Bearer or bare) or x-api-key, never guessed between two."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_tenant


@pytest.mark.parametrize(
    "make_headers",
    [
        lambda k: {"Authorization": f"Bearer {k}"},
        lambda k: {"Authorization": f"bearer {k}"},
        lambda k: {"Authorization": k},
        lambda k: {"x-api-key": k},
        lambda k: {"X-API-Key": f"  {k} "},
        lambda k: {"Authorization": f"Bearer {k}", "x-api-key": k},
        lambda k: {"Authorization": "Basic dXNlcjpwYXNz", "x-api-key": k},
    ],
    ids=[
        "bearer",
        "bearer-lowercase",
        "bare",
        "x-api-key",
        "x-api-key-padded",
        "same-twice",
        "basic-and-x-api-key",
    ],
)
async def test_accepted_header_forms(
    client: httpx.AsyncClient,
    session: AsyncSession,
    make_headers: Callable[[str], dict[str, str]],
) -> None:
    tenant = await create_tenant(session)
    response = await client.get("/v1/account", headers=make_headers(tenant.owner_key))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(tenant.account.id)


async def test_two_different_keys_are_a_bad_request(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    response = await client.get(
        "/v1/account",
        headers={"Authorization": f"Bearer {first.owner_key}", "x-api-key": second.owner_key},
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:keyservice:problem:ambiguous-key"
    assert first.owner_key not in response.text
    assert second.owner_key not in response.text


async def test_no_key_is_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"x-api-key": ""}):
        response = await client.get("/v1/account", headers=headers)
        assert response.status_code == 401
        assert response.json()["type"] == "urn:keyservice:problem:missing-key"
        assert response.headers["www-authenticate"] == 'Bearer realm="keyservice"'


async def test_a_key_in_the_query_string_is_not_read(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.get(
        "/v1/account", params={"api_key": tenant.owner_key, "key": tenant.owner_key}
    )
    assert response.status_code == 401

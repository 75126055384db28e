"""Errors become typed exceptions carrying the problem; idempotent calls are retried on
connection failures and 502/503/504, other calls only when the request never left."""

from __future__ import annotations

import socket

import httpx
import pytest

from keyservice_client import (
    AsyncKeyservice,
    AuthenticationError,
    InvalidRequestError,
    Keyservice,
    KeyserviceConnectionError,
    KeyserviceTimeout,
    NotFoundError,
    PermissionDeniedError,
    ProblemError,
    RateLimit,
    RateLimitError,
    Retry,
    ServiceUnavailableError,
    UnexpectedResponseError,
)
from tests.support import FAST_RETRY, Answer, Scripted, Server, free_port, new_key

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def test_a_404_problem_is_a_typed_exception(owner: AsyncKeyservice) -> None:
    with pytest.raises(NotFoundError) as caught:
        await owner.keys.get(UNKNOWN_ID)
    error = caught.value
    assert (error.type, error.status, error.slug) == (
        "urn:keyservice:problem:not-found",
        404,
        "not-found",
    )
    assert error.detail is not None
    assert error.instance == f"/v1/keys/{UNKNOWN_ID}"
    assert str(error) == f"404 urn:keyservice:problem:not-found: {error.detail}"
    assert isinstance(error, ProblemError)


async def test_a_validation_problem_keeps_its_extensions(owner: AsyncKeyservice) -> None:
    application = await owner.applications.create(
        name="Narrow", developer_email="dev@partner.example", permissions=["contacts:read"]
    )
    with pytest.raises(InvalidRequestError) as caught:
        await owner.keys.create(application.id, name="Too wide", scopes=["deals:write"])
    assert caught.value.type == "urn:keyservice:problem:invalid-scope"
    assert caught.value.extensions["scope"] == "deals:write"


async def test_refused_keys_are_401_and_403(server: Server, owner: AsyncKeyservice) -> None:
    created = await new_key(owner, "contacts:read")
    async with AsyncKeyservice(server.url, created.key, retry=FAST_RETRY) as product_key:
        with pytest.raises(PermissionDeniedError) as forbidden:
            await product_key.keys.list()
    assert forbidden.value.type == "urn:keyservice:problem:insufficient-scope"
    await owner.keys.revoke(created.id)
    async with AsyncKeyservice(server.url, created.key, retry=FAST_RETRY) as revoked:
        with pytest.raises(AuthenticationError) as unauthorized:
            await revoked.account.get()
    assert unauthorized.value.type == "urn:keyservice:problem:revoked-key"
    assert unauthorized.value.headers["www-authenticate"].startswith("Bearer")
    # Nothing of the key in what is raised.
    assert created.key not in str(unauthorized.value)
    assert created.key not in repr(unauthorized.value.args)


async def test_a_key_over_its_rate_limit_gets_retry_after(
    server: Server, owner: AsyncKeyservice
) -> None:
    async with AsyncKeyservice(server.url, server.owner_key, retry=FAST_RETRY) as me:
        personal = await me.personal_keys.create(
            name="Once a day",
            scopes=["keyservice:account:read"],
            rate_limit=RateLimit(limit=1, period_seconds=86_400),
        )
    async with AsyncKeyservice(server.url, personal.key, retry=FAST_RETRY) as limited:
        await limited.account.get()
        with pytest.raises(RateLimitError) as caught:
            await limited.account.get()
    error = caught.value
    assert (error.status, error.type) == (429, "urn:keyservice:problem:rate-limited")
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 86_400
    assert error.headers["ratelimit-policy"] == '"rate";q=1;w=86400'


def test_the_sync_client_raises_the_same(server: Server) -> None:
    with Keyservice(server.url, server.owner_key, retry=FAST_RETRY) as client:
        with pytest.raises(NotFoundError) as caught:
            client.applications.get(UNKNOWN_ID)
    assert caught.value.status == 404


# --- Retries ---------------------------------------------------------------------------------

UNAVAILABLE = Answer(
    503,
    {"type": "urn:keyservice:problem:database-unavailable", "title": "Down", "status": 503},
    {"content-type": "application/problem+json", "retry-after": "0"},
)
ACCOUNT = {
    "id": UNKNOWN_ID,
    "name": "Acme",
    "created_at": "2026-11-01T12:00:00Z",
    "updated_at": "2026-11-01T12:00:00Z",
    "alert_quota_percents": None,
    "alert_rate_limited_refusals": None,
    "alert_thresholds": {"quota_percents": [80, 100], "rate_limited_refusals": 100},
    "alert_emails_to_admins": False,
}


async def test_a_read_is_retried_after_503_and_502(scripted: Scripted) -> None:
    scripted.script(
        UNAVAILABLE, Answer(502, None, {"content-type": "text/html"}), Answer(200, ACCOUNT)
    )
    async with AsyncKeyservice(scripted.url, "ks_live_x", retry=FAST_RETRY) as client:
        account = await client.account.get()
    assert account.name == "Acme"
    assert [r.method for r in scripted.received] == ["GET", "GET", "GET"]
    assert scripted.received[0].headers["authorization"] == "Bearer ks_live_x"


def test_the_sync_client_retries_too(scripted: Scripted) -> None:
    scripted.script(UNAVAILABLE, Answer(200, ACCOUNT))
    with Keyservice(scripted.url, retry=FAST_RETRY) as client:
        assert client.account.get().name == "Acme"
    assert len(scripted.received) == 2


async def test_retries_stop_after_the_attempts_allowed(scripted: Scripted) -> None:
    scripted.script(UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, Answer(200, ACCOUNT))
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.account.get()
    assert caught.value.retry_after == 0
    assert caught.value.type == "urn:keyservice:problem:database-unavailable"
    assert len(scripted.received) == 3


async def test_a_retry_after_beyond_the_longest_delay_is_not_waited_for(
    scripted: Scripted,
) -> None:
    scripted.script(Answer(503, None, {"retry-after": "120"}), Answer(200, ACCOUNT))
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        with pytest.raises(ServiceUnavailableError) as caught:
            await client.account.get()
    assert (caught.value.retry_after, caught.value.type) == (120, "about:blank")
    assert len(scripted.received) == 1


async def test_a_post_is_not_retried(scripted: Scripted) -> None:
    """Neither after a 503 nor after a connection dropped once the request was sent: the
    server may have acted on it."""
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        scripted.script(UNAVAILABLE)
        with pytest.raises(ServiceUnavailableError):
            await client.applications.create(name="Once", developer_email="dev@partner.example")
        scripted.script(Answer(drop=True))
        with pytest.raises(KeyserviceConnectionError):
            await client.keys.rotate(UNKNOWN_ID)
    assert [r.method for r in scripted.received] == ["POST", "POST"]


async def test_a_dropped_connection_is_retried_for_a_read(scripted: Scripted) -> None:
    scripted.script(Answer(drop=True), Answer(200, ACCOUNT))
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        assert (await client.account.get()).id == UNKNOWN_ID
    assert len(scripted.received) == 2


async def test_revoking_is_retried_since_it_is_idempotent(scripted: Scripted) -> None:
    scripted.script(UNAVAILABLE)
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        with pytest.raises(UnexpectedResponseError):  # the scripted {} is no key
            await client.keys.revoke(UNKNOWN_ID)
    assert [r.path for r in scripted.received] == [f"/v1/keys/{UNKNOWN_ID}/revoke"] * 2


async def test_a_refused_connection_is_retried_even_for_a_post() -> None:
    """Nothing listens: the request never left, so sending it again is safe."""
    tries: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        tries.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        client = AsyncKeyservice(
            f"http://127.0.0.1:{free_port()}",
            "ks_live_0123456789abcdefghij",
            retry=FAST_RETRY,
            http_client=http,
        )
        with pytest.raises(KeyserviceConnectionError) as caught:
            await client.verify("ks_live_klmnopqrstuvwxyz0123")
    assert len(tries) == 3
    assert str(caught.value).startswith("POST /v1/verify: ConnectError")
    assert "ks_live_" not in str(caught.value)


async def test_timeouts_are_set_by_default_and_raised_as_timeouts() -> None:
    async with AsyncKeyservice("http://127.0.0.1:8000") as client:
        assert (client._http.timeout.connect, client._http.timeout.read) == (3.0, 10.0)
    # A server that takes the connection and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with AsyncKeyservice(url, timeout=0.05, retry=Retry(attempts=1)) as client:
            with pytest.raises(KeyserviceTimeout) as caught:
                await client.account.get()
    assert str(caught.value) == "GET /v1/account: ReadTimeout: ReadTimeout"

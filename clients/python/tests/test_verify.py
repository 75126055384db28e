"""``verify``: every verdict keyservice gives, as the client returns it."""

from __future__ import annotations

import pytest

from keyservice_client import (
    AsyncKeyservice,
    Keyservice,
    PermissionDeniedError,
    RateLimit,
    RateLimitError,
    ServiceUnavailableError,
)
from tests.support import (
    FAST_RETRY,
    Answer,
    Scripted,
    Server,
    TwoAccounts,
    new_application,
    new_key,
    unique,
)


async def test_a_valid_key_and_its_identity(owner: AsyncKeyservice) -> None:
    application = await new_application(owner)
    created = await new_key(owner, "contacts:read", "deals:read", application=application)
    verdict = await owner.verify(
        created.key, scopes=["contacts:read"], endpoint="GET /v1/contacts", cost=2
    )
    assert (verdict.valid, verdict.code, verdict.detail, verdict.cached) == (
        True,
        "VALID",
        None,
        False,
    )
    assert verdict.key is not None
    assert (verdict.key.id, verdict.key.application_id, verdict.key.kind) == (
        created.id,
        application.id,
        "application",
    )
    assert verdict.key.scopes == ("contacts:read", "deals:read")
    assert verdict.key.account_id == (await owner.account.get()).id
    assert (verdict.rate_limit, verdict.rate_limit_headers, verdict.retry_after) == (None, {}, None)


async def test_refusals_are_verdicts(owner: AsyncKeyservice) -> None:
    created = await new_key(owner, "contacts:read")
    malformed = await owner.verify("ks_live_nope")
    assert (malformed.valid, malformed.code, malformed.key) == (False, "MALFORMED", None)
    scope = await owner.verify(created.key, scopes=["deals:write"])
    assert (scope.valid, scope.code) == (False, "INSUFFICIENT_SCOPE")
    assert scope.detail is not None
    # A well-formed key that is no key (any more): the secret before a rotation.
    await owner.keys.rotate(created.id)
    unknown = await owner.verify(created.key)
    assert (unknown.valid, unknown.code) == (False, "NOT_FOUND")


async def test_revoked_and_another_account(
    owner: AsyncKeyservice, anonymous: AsyncKeyservice
) -> None:
    created = await new_key(owner)
    other_account = "00000000-0000-4000-8000-000000000000"
    foreign = await anonymous.verify(created.key, account_id=other_account)
    assert (foreign.valid, foreign.code) == (False, "ACCOUNT_FORBIDDEN")
    # The owner's client authenticates with its own key: it learns nothing of other accounts.
    assert (await owner.verify(created.key, account_id=other_account)).code == "NOT_FOUND"
    await owner.keys.revoke(created.id)
    assert (await anonymous.verify(created.key)).code == "REVOKED"


async def test_rate_limited_and_quota_exceeded_carry_their_headers(owner: AsyncKeyservice) -> None:
    limited = await new_key(owner, rate_limit=RateLimit(limit=1, period_seconds=3600))
    first = await owner.verify(limited.key)
    assert first.valid
    assert first.rate_limit is not None
    assert first.rate_limit_headers["RateLimit-Policy"] == '"rate";q=1;w=3600'
    refused = await owner.verify(limited.key)
    assert (refused.valid, refused.code) == (False, "RATE_LIMITED")
    assert refused.retry_after is not None
    assert 0 < refused.retry_after <= 3600
    assert refused.rate_limit_headers["Retry-After"] == str(refused.retry_after)
    assert refused.rate_limit_headers["X-RateLimit-Remaining"] == "0"

    quota = await new_key(owner, monthly_quota=1)
    assert (await owner.verify(quota.key)).valid
    over = await owner.verify(quota.key)
    assert (over.code, over.rate_limit is not None) == ("QUOTA_EXCEEDED", True)
    assert over.rate_limit_headers["RateLimit-Policy"].startswith('"month";q=1')


async def test_a_users_key_in_several_accounts_must_name_one(
    anonymous: AsyncKeyservice, two_accounts: TwoAccounts
) -> None:
    verdict = await anonymous.verify(two_accounts.key)
    assert (verdict.valid, verdict.code) == (False, "ACCOUNT_REQUIRED")
    account_id = two_accounts.account_ids[1]
    chosen = await anonymous.verify(two_accounts.key, account_id=account_id)
    assert chosen.valid
    assert chosen.key is not None
    assert (chosen.key.account_id, chosen.key.kind, chosen.key.role) == (
        account_id,
        "personal",
        "owner",
    )


async def test_unavailable_is_a_verdict_with_retry_after(scripted: Scripted) -> None:
    """keyservice's 503 on /v1/verify (its database is down, the key not cached) is its
    UNAVAILABLE verdict; it is not retried, being a POST."""
    scripted.script(
        Answer(
            503,
            {"valid": False, "code": "UNAVAILABLE", "detail": "The database is unreachable"},
            {"retry-after": "7"},
        )
    )
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        verdict = await client.verify("ks_live_whatever")
    assert (verdict.valid, verdict.code, verdict.retry_after) == (False, "UNAVAILABLE", 7)
    assert verdict.rate_limit_headers == {"Retry-After": "7"}
    assert len(scripted.received) == 1


async def test_a_503_that_is_no_verdict_raises(scripted: Scripted) -> None:
    scripted.script(Answer(503, None, {"content-type": "text/html"}))
    async with AsyncKeyservice(scripted.url, retry=FAST_RETRY) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.verify("ks_live_whatever")


async def test_an_authenticated_caller_names_its_clients(
    server: Server, owner: AsyncKeyservice
) -> None:
    """With a key of its own (holding keyservice:verify), the caller's `client_address` counts:
    failed guesses are throttled per client, and only keys of its account verify."""
    ours = await new_key(owner)
    gateway_key = await owner.personal_keys.create(
        name="Gateway", scopes=["keyservice:verify"], expires_in="30d"
    )
    foreign_owner = server.new_account(unique("gina").replace(" ", "-") + "@example.com")
    async with AsyncKeyservice(server.url, foreign_owner, retry=FAST_RETRY) as foreign:
        theirs = await new_key(foreign)

    async with AsyncKeyservice(server.url, gateway_key.key, retry=FAST_RETRY) as gateway:
        assert gateway.authenticated
        assert (await gateway.verify(ours.key, client_address="198.51.100.7")).valid
        assert (await gateway.verify(theirs.key)).code == "NOT_FOUND"
        blocked = None
        for _ in range(200):
            try:
                await gateway.verify("ks_live_guess", client_address="198.51.100.66")
            except RateLimitError as error:
                blocked = error
                break
        assert blocked is not None
        assert blocked.type == "urn:keyservice:problem:too-many-failures"
        assert blocked.retry_after is not None
        assert blocked.retry_after > 0
        # Only that client is blocked.
        assert (await gateway.verify(ours.key, client_address="198.51.100.7")).valid

    async with AsyncKeyservice(server.url, ours.key, retry=FAST_RETRY) as not_a_gateway:
        with pytest.raises(PermissionDeniedError):
            await not_a_gateway.verify(ours.key)


def test_the_sync_client_verifies(server: Server) -> None:
    with Keyservice(server.url, retry=FAST_RETRY) as client:
        verdict = client.verify(server.owner_key, scopes=["keyservice:keys:read"])
        assert (verdict.valid, verdict.code) == (True, "VALID")
        assert verdict.key is not None
        assert verdict.key.kind == "personal"
        assert client.verify("ks_live_nope").code == "MALFORMED"

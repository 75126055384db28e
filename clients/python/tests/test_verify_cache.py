"""The verify cache: valid answers for at most its ttl, never refusals, never past a key's
expiry, never for limited keys. Time is the test's clock, moved by hand; the calls that reach
keyservice are counted on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from keyservice_client import AsyncKeyservice, Keyservice, RateLimit, VerifyCache
from tests.support import FAST_RETRY, Server, new_key


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Cached:
    client: AsyncKeyservice
    clock: Clock
    calls: list[httpx.Request]


@pytest.fixture
async def cached(server: Server) -> AsyncIterator[Cached]:
    clock = Clock(datetime.now(UTC).timestamp())
    calls: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        calls.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
        client = AsyncKeyservice(
            server.url,
            retry=FAST_RETRY,
            verify_cache=VerifyCache(ttl=5, clock=clock),
            http_client=http,
        )
        yield Cached(client, clock, calls)


async def test_a_valid_answer_is_cached_for_the_ttl(cached: Cached, owner: AsyncKeyservice) -> None:
    created = await new_key(owner, "contacts:read")
    client, clock = cached.client, cached.clock
    first = await client.verify(created.key, scopes=["contacts:read"])
    again = await client.verify(created.key, scopes=["contacts:read"], endpoint="GET /x")
    assert (first.cached, again.cached) == (False, True)
    assert again.key == first.key
    assert len(cached.calls) == 1

    # The trade: revoked in keyservice, the key still passes here until the ttl is over.
    await owner.keys.revoke(created.id)
    clock.now += 4.9
    assert (await client.verify(created.key, scopes=["contacts:read"])).valid
    assert len(cached.calls) == 1
    clock.now += 0.1
    refused = await client.verify(created.key, scopes=["contacts:read"])
    assert (refused.valid, refused.code, refused.cached) == (False, "REVOKED", False)
    assert len(cached.calls) == 2


async def test_refusals_are_never_cached(cached: Cached, owner: AsyncKeyservice) -> None:
    created = await new_key(owner, "contacts:read")
    for _ in range(2):
        assert (await cached.client.verify(created.key, scopes=["deals:read"])).code == (
            "INSUFFICIENT_SCOPE"
        )
        assert (await cached.client.verify("ks_live_nope")).code == "MALFORMED"
    assert len(cached.calls) == 4
    assert cached.client.verify_cache is not None
    assert len(cached.client.verify_cache) == 0


async def test_each_question_is_cached_apart(cached: Cached, owner: AsyncKeyservice) -> None:
    created = await new_key(owner, "contacts:read", "contacts:write")
    client = cached.client
    await client.verify(created.key, scopes=["contacts:read"])
    await client.verify(created.key, scopes=["contacts:read", "contacts:write"])
    await client.verify(created.key, scopes=["contacts:write", "contacts:read"])  # the same
    await client.verify(created.key)
    assert len(cached.calls) == 3


async def test_never_past_the_keys_expiry(cached: Cached, owner: AsyncKeyservice) -> None:
    expires_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    created = await new_key(owner, expires_at=expires_at)
    client, clock = cached.client, cached.clock
    clock.now = expires_at.timestamp() - 2  # the ttl would reach past the expiry
    assert not (await client.verify(created.key)).cached
    clock.now = expires_at.timestamp() - 0.5
    assert (await client.verify(created.key)).cached
    clock.now = expires_at.timestamp()
    # Gone from the cache; keyservice's clock, an hour earlier, still finds the key good.
    assert not (await client.verify(created.key)).cached
    assert len(cached.calls) == 2


async def test_never_past_a_rotated_secrets_grace(cached: Cached, owner: AsyncKeyservice) -> None:
    created = await new_key(owner)
    await owner.keys.rotate(created.id, grace_period_seconds=3600)
    client, clock = cached.client, cached.clock
    old = await client.verify(created.key)
    assert old.key is not None
    assert old.key.rotated
    assert old.key.rotated_secret_expires_at is not None
    clock.now = old.key.rotated_secret_expires_at.timestamp() - 1
    assert not (await client.verify(created.key)).cached  # the first entry's ttl is long over
    clock.now += 0.5
    assert (await client.verify(created.key)).cached
    clock.now += 0.5
    assert not (await client.verify(created.key)).cached


async def test_keys_with_limits_are_never_cached(cached: Cached, owner: AsyncKeyservice) -> None:
    limited = await new_key(owner, rate_limit=RateLimit(limit=1000, period_seconds=1))
    quota = await new_key(owner, monthly_quota=1000)
    for _ in range(2):
        assert (await cached.client.verify(limited.key)).valid
        assert (await cached.client.verify(quota.key)).valid
    assert len(cached.calls) == 4


async def test_a_clock_that_goes_back_empties_the_entry(
    cached: Cached, owner: AsyncKeyservice
) -> None:
    created = await new_key(owner)
    await cached.client.verify(created.key)
    cached.clock.now -= 60
    assert not (await cached.client.verify(created.key)).cached


async def test_the_cache_is_bounded(server: Server, owner: AsyncKeyservice) -> None:
    cache = VerifyCache(ttl=5, max_entries=2)
    keys = [(await new_key(owner)).key for _ in range(3)]
    async with AsyncKeyservice(server.url, retry=FAST_RETRY, verify_cache=cache) as client:
        for key in keys:
            await client.verify(key)
        assert len(cache) == 2
        assert not (await client.verify(keys[0])).cached  # the least recently used went
        assert (await client.verify(keys[2])).cached
        cache.clear()
        assert len(cache) == 0


def test_the_ttl_is_a_few_seconds() -> None:
    with pytest.raises(ValueError, match="at most 30 seconds"):
        VerifyCache(ttl=300)
    with pytest.raises(ValueError, match="more than 0"):
        VerifyCache(ttl=0)


def test_the_sync_client_caches_too(server: Server) -> None:
    clock = Clock(datetime.now(UTC).timestamp())
    cache = VerifyCache(ttl=2, clock=clock)
    with Keyservice(server.url, retry=FAST_RETRY, verify_cache=cache) as client:
        assert not client.verify(server.owner_key).cached
        assert client.verify(server.owner_key).cached
        clock.now += 2
        assert not client.verify(server.owner_key).cached


def test_only_a_digest_of_the_key_is_kept(server: Server) -> None:
    cache = VerifyCache()
    with Keyservice(server.url, retry=FAST_RETRY, verify_cache=cache) as client:
        client.verify(server.owner_key)
    assert len(cache) == 1
    assert server.owner_key not in repr(cache._entries)

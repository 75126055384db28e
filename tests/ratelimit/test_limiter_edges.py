"""The limiter's edge cases: quota leases, tightened policies, impossible costs, long refusals."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import create_limited_key, create_tenant
from keyservice.models import ApiKey
from keyservice.ratelimit.limiter import MAX_LOCAL_BLOCK_SECONDS, Limiter, Refusal
from keyservice.ratelimit.policy import Limits, RatePolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _owner_key_id(session: AsyncSession) -> uuid.UUID:
    tenant = await create_tenant(session)
    key_id: uuid.UUID = (
        await session.scalars(select(ApiKey.id).where(ApiKey.user_id == tenant.owner.id))
    ).one()
    return key_id


async def test_unspent_leased_quota_comes_back(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """A quota key used now and then: every lease outlives its use, none may eat the quota."""
    key_id = await _owner_key_id(session)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    limits = Limits(rate=None, monthly_quota=20)
    verdicts = []
    for _ in range(21):
        verdicts.append((await limiter.check(key_id, limits)).refused)
        clock.now += 2.0  # the lease expires between requests
    assert verdicts == [None] * 20 + [Refusal.quota]


async def test_a_long_refusal_is_rechecked_with_the_database(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    key_id = await _owner_key_id(session)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    limits = Limits(rate=None, monthly_quota=1)
    assert (await limiter.check(key_id, limits)).allowed
    refused = await limiter.check(key_id, limits)
    assert refused.refused is Refusal.quota
    assert refused.retry_after is not None
    assert refused.retry_after > MAX_LOCAL_BLOCK_SECONDS  # until the month ends...
    leases = limiter.leases_taken
    clock.now += MAX_LOCAL_BLOCK_SECONDS - 1
    await limiter.check(key_id, limits)
    assert limiter.leases_taken == leases  # ...answered locally for a while,
    clock.now += 2
    await limiter.check(key_id, limits)
    assert limiter.leases_taken == leases + 1  # then asked of the database again


async def test_a_tightened_policy_leaves_no_debt(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    key_id = await _owner_key_id(session)
    loose = Limits(rate=RatePolicy(limit=1000, period_seconds=1, burst=1000), monthly_quota=None)
    tight = Limits(rate=RatePolicy(limit=1, period_seconds=60, burst=1), monthly_quota=None)
    first = Limiter(sessionmaker)
    for _ in range(3):
        assert (await first.check(key_id, loose)).allowed
    refused = await Limiter(sessionmaker).check(key_id, tight)
    if refused.allowed:
        refused = await Limiter(sessionmaker).check(key_id, tight)
    assert refused.refused is Refusal.rate
    assert refused.retry_after is not None
    assert refused.retry_after <= 60  # one token a minute: never more than a minute away


async def test_a_cost_beyond_the_burst_is_refused_without_a_write(
    client: httpx.AsyncClient, session: AsyncSession, sql_statements: list[str]
) -> None:
    key = await create_limited_key(client, session, {"limit": 3, "period_seconds": 1})
    assert (await client.post("/v1/verify", json={"key": key})).json()["code"] == "VALID"
    sql_statements.clear()
    response = await client.post("/v1/verify", json={"key": key, "cost": 4})
    assert response.json()["code"] == "RATE_LIMITED"
    assert "retry-after" not in response.headers  # waiting would not help
    assert not [s for s in sql_statements if "rate_buckets" in s]

"""Leases for many keys: long leases for keys used now and then, one statement for many keys."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import StatementCounter
from factories import create_personal_keys, create_tenant
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.errors import UnknownKey
from keyservice.ratelimit.limiter import Decision, Limiter
from keyservice.ratelimit.policy import LONG_LEASE_SECONDS, Limits, RatePolicy

LIMITS = Limits(rate=RatePolicy(limit=1000, period_seconds=1, burst=1000), monthly_quota=None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _keys(session: AsyncSession, count: int) -> list[uuid.UUID]:
    tenant = await create_tenant(session)
    return [key.id for key in await create_personal_keys(session, tenant.owner, count)]


async def test_a_key_used_now_and_then_takes_one_lease_for_many_requests(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    [key_id] = await _keys(session, 1)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    for _ in range(20):
        assert (await limiter.check(key_id, LIMITS)).allowed
        clock.now += 1.0  # far longer than a short lease lives
    assert limiter.leases_taken == 1


async def test_a_long_lease_keeps_most_of_the_burst_free_for_other_instances(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    [key_id] = await _keys(session, 1)
    limits = Limits(rate=RatePolicy(limit=1, period_seconds=60, burst=64), monthly_quota=None)
    assert (await Limiter(sessionmaker).check(key_id, limits)).allowed  # a long lease of 4
    other = Limiter(sessionmaker)
    admitted = 0
    while (await other.check(key_id, limits)).allowed:
        admitted += 1
    assert admitted == 64 - 4


async def test_a_long_lease_in_use_is_renewed_before_it_expires(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """A key used now and then does not wait for its renewals: used in the last quarter of its
    long lease, it renews it in the background, and what follows the old lease's expiry is served
    from the new one."""
    [key_id] = await _keys(session, 1)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    assert (await limiter.check(key_id, LIMITS)).allowed
    clock.now += LONG_LEASE_SECONDS * 0.5
    assert (await limiter.check(key_id, LIMITS)).allowed
    await limiter.renewals()
    assert limiter.leases_taken == 1  # half its life: not yet
    clock.now += LONG_LEASE_SECONDS * 0.3
    assert (await limiter.check(key_id, LIMITS)).allowed
    assert limiter.leases_taken == 1  # served at once, from the old lease
    await limiter.renewals()
    assert limiter.leases_taken == 2  # renewed meanwhile
    clock.now += LONG_LEASE_SECONDS * 0.3  # past the old lease's end
    assert (await limiter.check(key_id, LIMITS)).allowed
    await limiter.renewals()
    assert limiter.leases_taken == 2


async def test_a_renewal_under_way_does_not_hold_up_requests(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    [key_id] = await _keys(session, 1)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    assert (await limiter.check(key_id, LIMITS)).allowed
    clock.now += LONG_LEASE_SECONDS * 0.9
    assert (await limiter.check(key_id, LIMITS)).allowed  # starts the renewal
    for _ in range(5):
        await asyncio.sleep(0)  # the renewal's statement is under way
    assert (await limiter.check(key_id, LIMITS)).allowed
    assert limiter.leases_taken == 1  # served from the old lease, not after the renewal
    await limiter.renewals()
    assert limiter.leases_taken == 2


async def test_a_renewal_that_gets_nothing_leaves_the_old_lease_serving(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """Another instance drained the bucket: the renewal gets no token, and the old lease, still
    counted against the bucket, serves on until it ends."""
    [key_id] = await _keys(session, 1)
    limits = Limits(rate=RatePolicy(limit=1, period_seconds=600, burst=64), monthly_quota=None)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    assert (await limiter.check(key_id, limits)).allowed  # a long lease of 4: 3 left
    other = Limiter(sessionmaker)
    while (await other.check(key_id, limits)).allowed:
        pass
    clock.now += LONG_LEASE_SECONDS * 0.9
    assert (await limiter.check(key_id, limits)).allowed  # 2 left; renewal gets nothing
    await limiter.renewals()
    assert (await limiter.check(key_id, limits)).allowed
    assert (await limiter.check(key_id, limits)).allowed
    assert not (await limiter.check(key_id, limits)).allowed


async def test_a_long_lease_under_a_quota_is_renewed_on_the_request_path(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """A renewal moves the quota, and the request that moves it raises the quota's alerts: a key
    with a quota renews when a request needs it, not ahead."""
    [key_id] = await _keys(session, 1)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    limits = Limits(rate=LIMITS.rate, monthly_quota=1_000_000)
    assert (await limiter.check(key_id, limits)).allowed
    clock.now += LONG_LEASE_SECONDS * 0.9
    assert (await limiter.check(key_id, limits)).allowed
    await limiter.renewals()
    assert limiter.leases_taken == 1


async def test_a_key_in_steady_use_leases_again_soon_after_a_long_lease(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """Once a key's long lease is spent, its leases are short: they expire within a fraction of a
    second, not LONG_LEASE_SECONDS, and tie up little of the bucket for long."""
    [key_id] = await _keys(session, 1)
    clock = FakeClock()
    limiter = Limiter(sessionmaker, clock=clock)
    for _ in range(1000 // 16 + 1):  # the long lease, and one more request
        assert (await limiter.check(key_id, LIMITS)).allowed
    leases = limiter.leases_taken
    assert leases == 2
    clock.now += 1.0
    assert (await limiter.check(key_id, LIMITS)).allowed
    assert limiter.leases_taken == leases + 1
    assert LONG_LEASE_SECONDS > 1.0


async def test_leases_for_many_keys_go_together(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    sql_statements: list[str],
) -> None:
    keys = await _keys(session, 60)
    limiter = Limiter(sessionmaker)
    sql_statements.clear()
    decisions = await asyncio.gather(*(limiter.check(key_id, LIMITS) for key_id in keys))
    assert all(decision.allowed for decision in decisions)
    assert limiter.leases_taken == 60
    bucket_statements = [s for s in sql_statements if "rate_buckets" in s]
    # The first batch is the first key alone; the rest wait for it and go in one more. Each
    # creates its keys' buckets: the lease, the buckets, the lease again.
    assert len(bucket_statements) <= 2 * 3


async def test_instances_leasing_the_same_keys_in_any_order_do_not_deadlock(
    postgres_url: str, settings: Settings
) -> None:
    instances = 4
    engines = [create_engine(settings, postgres_url) for _ in range(instances)]
    try:
        async with create_sessionmaker(engines[0])() as session:
            keys = await _keys(session, 400)
        clocks = [FakeClock() for _ in range(instances)]
        counter = StatementCounter()
        for engine in engines:
            event.listen(engine.sync_engine, "before_cursor_execute", counter)
        limiters = [
            Limiter(create_sessionmaker(engine), clock=clock)
            for engine, clock in zip(engines, clocks, strict=True)
        ]
        for round_ in range(6):
            for clock in clocks:
                clock.now += LONG_LEASE_SECONDS + 1  # every lease has expired: lease again
            orders = [keys[i * 37 + round_ :] + keys[: i * 37 + round_] for i in range(instances)]
            orders = [order if i % 2 else order[::-1] for i, order in enumerate(orders)]
            # A deadlock would raise here (the local clocks run ahead of the database's, so
            # later rounds may well be refused: the leases still count in the bucket).
            await asyncio.gather(
                *(
                    limiter.check(key_id, LIMITS)
                    for limiter, order in zip(limiters, orders, strict=True)
                    for key_id in order
                )
            )
        # Batched: a statement (with the buckets' creation, three) per many keys, not per key.
        bucket_statements = [s for s in counter.statements if "rate_buckets" in s]
        assert len(bucket_statements) < 3 * 6 * instances * 400 / 4
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_key_deleted_while_it_is_verified_is_unknown_and_spares_the_batch(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """A key gone between its lookup and its lease: no bucket is created for it (its row is
    gone), it answers NOT_FOUND, and the keys leased in the same statement are not held up."""
    [key_id] = await _keys(session, 1)
    limiter = Limiter(sessionmaker)
    gone, kept = await asyncio.gather(
        limiter.check(uuid.uuid4(), LIMITS), limiter.check(key_id, LIMITS), return_exceptions=True
    )
    assert isinstance(gone, UnknownKey)
    assert isinstance(kept, Decision)
    assert kept.allowed

"""Per-instance rate limiting: spend leased tokens in memory, lease more from the shared bucket.

A key's requests on one instance cost one database write per lease, not per request, and a key
that is over its limit costs none while it waits: the bucket cannot refill faster than its rate,
so the instance knows when asking again could succeed.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
import weakref
from calendar import monthrange
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.ratelimit import buckets
from keyservice.ratelimit.policy import Limits, RatePolicy

# A key with a quota and no rate limit leases its quota in chunks, kept this long.
QUOTA_LEASE_SECONDS = 1.0
QUOTA_LEASE_SIZE = 100
# However long a refusal's Retry-After, an instance asks the bucket again after this long: the
# database's clock, not this instance's, says when a month or a policy ends.
MAX_LOCAL_BLOCK_SECONDS = 60.0


class Refusal(StrEnum):
    rate = "RATE_LIMITED"
    quota = "QUOTA_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict of the limiter on one request, with what the rate-limit headers report."""

    limits: Limits
    refused: Refusal | None = None
    retry_after: int | None = None
    remaining: int | None = None
    reset_seconds: int | None = None
    quota_remaining: int | None = None
    quota_reset_seconds: int | None = None
    # Set when this request leased from the shared bucket: the quota used before and after.
    quota_leased: tuple[int, int] | None = None

    @property
    def allowed(self) -> bool:
        return self.refused is None


@dataclass(slots=True)
class _Lease:
    limits: Limits
    tokens: float = 0.0
    expires: float = 0.0
    # Requests costing blocked_cost or more cannot succeed before blocked_until.
    blocked_until: float = 0.0
    blocked_cost: int = 0
    refusal: Refusal | None = None
    # The shared bucket as last seen, for the Remaining headers.
    bucket_tokens: float = 0.0
    seen_at: float = 0.0
    quota_used: int = 0


def _seconds_to_next_month(now: datetime) -> int:
    days = monthrange(now.year, now.month)[1]
    month_end = now.replace(day=days, hour=23, minute=59, second=59, microsecond=0)
    return int((month_end - now).total_seconds()) + 1


class Limiter:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.sessionmaker = sessionmaker
        self._clock = clock
        self._max_keys = max_keys
        self._leases: dict[uuid.UUID, _Lease] = {}
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.leases_taken = 0

    async def check(self, key_id: uuid.UUID, limits: Limits, cost: int = 1) -> Decision:
        if limits.rate is not None and cost > limits.rate.burst:
            # Could never pass: refused without a write, and without a Retry-After to follow.
            return Decision(limits=limits, refused=Refusal.rate, remaining=0, reset_seconds=0)
        decision = self._from_lease(key_id, limits, cost)
        if decision is not None:
            return decision
        lock = self._locks.get(key_id)
        if lock is None:
            lock = self._locks[key_id] = asyncio.Lock()
        async with lock:
            # Another request may have leased while this one waited.
            decision = self._from_lease(key_id, limits, cost)
            if decision is not None:
                return decision
            return await self._lease(key_id, limits, cost)

    def _from_lease(self, key_id: uuid.UUID, limits: Limits, cost: int) -> Decision | None:
        lease = self._leases.get(key_id)
        if lease is None or lease.limits != limits:
            return None
        now = self._clock()
        if lease.blocked_until > now and cost >= lease.blocked_cost:
            return self._refused(lease, math.ceil(lease.blocked_until - now))
        if lease.expires > now and lease.tokens >= cost:
            lease.tokens -= cost
            return self._allowed(lease, now)
        return None

    async def _lease(self, key_id: uuid.UUID, limits: Limits, cost: int) -> Decision:
        rate = limits.rate
        if rate is not None:
            want, lifetime = rate.lease_size(cost), rate.lease_seconds
            burst, per_second = float(rate.burst), rate.rate
        else:
            want, lifetime = max(cost, QUOTA_LEASE_SIZE), QUOTA_LEASE_SECONDS
            burst = per_second = float(buckets.UNLIMITED)
        window_ms = max(1, int(lifetime * 1000))
        # The lease lives no longer than the bucket's window that accounts for it.
        lifetime = window_ms / 1000
        previous = self._leases.get(key_id)
        # What the previous lease left unspent goes back to the quota.
        returned = int(previous.tokens) if previous and previous.limits == limits else 0
        started = self._clock()
        async with self.sessionmaker() as session, session.begin():
            result = await buckets.lease(
                session,
                key_id=key_id,
                cost=cost,
                want=want,
                burst=burst,
                rate=per_second,
                window_ms=window_ms,
                quota=limits.monthly_quota,
                returned=returned,
            )
        self.leases_taken += 1
        lease = _Lease(
            limits=limits,
            bucket_tokens=result.tokens,
            seen_at=started,
            quota_used=result.quota_used,
        )
        if len(self._leases) >= self._max_keys and key_id not in self._leases:
            self._leases.pop(next(iter(self._leases)))
        self._leases[key_id] = lease
        leased = (result.quota_used - result.taken, result.quota_used)
        if result.taken >= cost:
            lease.tokens = result.taken - cost
            # Measured from before the statement was sent: the lease dies no later than the
            # bucket believes.
            lease.expires = started + lifetime
            return replace(self._allowed(lease, started), quota_leased=leased)
        quota_left = (limits.monthly_quota or 0) - result.quota_used
        if rate is None or (limits.monthly_quota is not None and quota_left < cost):
            lease.refusal = Refusal.quota
            wait = float(_seconds_to_next_month(datetime.now(UTC)))
            block = wait
        else:
            lease.refusal = Refusal.rate
            wait = self._rate_wait(rate, result, cost, lifetime)
            # Ask the bucket again only once it can fill a lease, not a single request: an
            # instance over its limit then costs a write per lease, not per admitted request.
            block = self._rate_wait(rate, result, max(cost, min(want, rate.burst)), lifetime)
        lease.blocked_until = started + min(block, MAX_LOCAL_BLOCK_SECONDS)
        lease.blocked_cost = cost
        return replace(self._refused(lease, max(1, math.ceil(wait))), quota_leased=leased)

    @staticmethod
    def _rate_wait(
        rate: RatePolicy, result: buckets.LeaseResult, cost: int, window: float
    ) -> float:
        """How long until the bucket can have ``cost`` tokens: refill, and leases expiring."""
        wait = max(0.0, (cost - result.tokens) / rate.rate)
        window_end = max(0.0, (result.window + 1) * window - result.now_epoch)
        if rate.burst - result.leased_previous - result.leased_current < cost:
            # The previous window's leases stop counting at the end of this one; if that is not
            # enough, the current window's stop counting one window later.
            freed = rate.burst - result.leased_current
            wait = max(wait, window_end if freed >= cost else window_end + window)
        return wait

    def _allowed(self, lease: _Lease, now: float) -> Decision:
        limits = lease.limits
        remaining = reset = None
        if limits.rate is not None:
            refill = (now - lease.seen_at) * limits.rate.rate
            estimate = min(limits.rate.burst, lease.tokens + lease.bucket_tokens + refill)
            remaining = max(0, int(estimate))
            reset = math.ceil((limits.rate.burst - estimate) / limits.rate.rate)
        quota_remaining, quota_reset = self._quota(lease)
        return Decision(
            limits=limits,
            remaining=remaining,
            reset_seconds=reset,
            quota_remaining=quota_remaining,
            quota_reset_seconds=quota_reset,
        )

    def _refused(self, lease: _Lease, retry_after: int) -> Decision:
        limits = lease.limits
        quota_remaining, quota_reset = self._quota(lease)
        return Decision(
            limits=limits,
            refused=lease.refusal,
            retry_after=retry_after,
            remaining=0 if limits.rate is not None else None,
            reset_seconds=retry_after if limits.rate is not None else None,
            quota_remaining=quota_remaining,
            quota_reset_seconds=quota_reset,
        )

    @staticmethod
    def _quota(lease: _Lease) -> tuple[int | None, int | None]:
        quota = lease.limits.monthly_quota
        if quota is None:
            return None, None
        return max(0, quota - lease.quota_used), _seconds_to_next_month(datetime.now(UTC))


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` (IETF httpapi draft) and the ``X-RateLimit-*``
    fields for a limited key's answer."""
    policies, states, legacy = [], [], {}
    limits = decision.limits
    if limits.rate is not None:
        rate = limits.rate
        policies.append(f'"rate";q={rate.limit};w={rate.period_seconds}')
        states.append(f'"rate";r={decision.remaining or 0};t={decision.reset_seconds or 0}')
        legacy = {
            "X-RateLimit-Limit": str(rate.limit),
            "X-RateLimit-Remaining": str(decision.remaining or 0),
            "X-RateLimit-Reset": str(decision.reset_seconds or 0),
        }
    if limits.monthly_quota is not None:
        reset = decision.quota_reset_seconds or 0
        policies.append(f'"month";q={limits.monthly_quota};w=2592000')
        states.append(f'"month";r={decision.quota_remaining or 0};t={reset}')
        if not legacy:
            legacy = {
                "X-RateLimit-Limit": str(limits.monthly_quota),
                "X-RateLimit-Remaining": str(decision.quota_remaining or 0),
                "X-RateLimit-Reset": str(reset),
            }
    headers = {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states), **legacy}
    if decision.retry_after is not None:
        headers["Retry-After"] = str(decision.retry_after)
    return headers

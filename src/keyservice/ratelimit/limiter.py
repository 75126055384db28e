"""Per-instance rate limiting: spend leased tokens in memory, lease more from the shared bucket.

A key's requests on one instance cost one database write per lease, not per request, and a key
that is over its limit costs none while it waits: the bucket cannot refill faster than its rate,
so the instance knows when asking again could succeed.

A key in steady use takes short leases (a fraction of a second of its rate); a key the instance
sees now and then takes long ones (``LONG_LEASE_SECONDS``, a small share of its burst), which a
single request rarely outlives. The leases that the requests for many keys need at one time are
taken together, in one statement: thousands of keys cost a few statements a second, not one per
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

from keyservice import metrics
from keyservice.availability import Availability
from keyservice.errors import UnknownKey
from keyservice.ratelimit import buckets
from keyservice.ratelimit.policy import LONG_LEASE_SECONDS, Limits, RatePolicy

# A key with a quota and no rate limit leases its quota in chunks, kept this long.
QUOTA_LEASE_SECONDS = 1.0
QUOTA_LEASE_SIZE = 100
# However long a refusal's Retry-After, an instance asks the bucket again after this long: the
# database's clock, not this instance's, says when a month or a policy ends.
MAX_LOCAL_BLOCK_SECONDS = 60.0
# A long lease used in the last fifth of its life is renewed then, in the background: a key in
# steady use then never waits for its renewal.
RENEW_AHEAD = 0.2
# While the database is unreachable, an instance admits a key's rate by itself in windows this long.
OUTAGE_WINDOW_SECONDS = 1.0


class Refusal(StrEnum):
    rate = "RATE_LIMITED"
    quota = "QUOTA_EXCEEDED"


# Not frozen: one is made for every request of a limited key, and a frozen dataclass's __init__
# costs three times as much.
@dataclass(slots=True)
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
    # When to renew it ahead of its expiry (a long lease of a key without a quota), if at all.
    renew_at: float = math.inf
    # Granted by this instance alone during a database outage: nothing of it came from the
    # shared bucket, so nothing of it goes back there.
    outage: bool = False
    granted: float = 0.0


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
        availability: Availability | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.availability = availability or Availability(grace_seconds=0)
        self._clock = clock
        self._max_keys = max_keys
        self._leases: dict[uuid.UUID, _Lease] = {}
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._pending: dict[
            uuid.UUID,
            tuple[buckets.LeaseRequest, asyncio.Future[buckets.LeaseResult | None]],
        ] = {}
        self._leaser: asyncio.Task[None] | None = None
        self._renewals: set[asyncio.Task[None]] = set()
        self.leases_taken = 0

    async def check(self, key_id: uuid.UUID, limits: Limits, cost: int = 1) -> Decision:
        if limits.rate is not None and cost > limits.rate.burst:
            # Could never pass: refused without a write, and without a Retry-After to follow.
            return Decision(limits=limits, refused=Refusal.rate, remaining=0, reset_seconds=0)
        decision = self._from_lease(key_id, limits, cost)
        if decision is not None:
            return decision
        async with self._lock(key_id):
            # Another request may have leased while this one waited.
            decision = self._from_lease(key_id, limits, cost)
            if decision is not None:
                return decision
            return await self._lease(key_id, limits, cost)

    def _from_lease(self, key_id: uuid.UUID, limits: Limits, cost: int) -> Decision | None:
        lease = self._leases.get(key_id)
        # A cached key passes the same Limits object every time: compared field by field only
        # when it is another.
        if lease is None or (lease.limits is not limits and lease.limits != limits):
            return None
        now = self._clock()
        if lease.blocked_until > now and cost >= lease.blocked_cost:
            return self._refused(lease, math.ceil(lease.blocked_until - now))
        if lease.expires > now and lease.tokens >= cost:
            lease.tokens -= cost
            if lease.renew_at <= now:
                lease.renew_at = math.inf  # once
                renewal = asyncio.create_task(self._renew(key_id, limits, lease))
                self._renewals.add(renewal)
                renewal.add_done_callback(self._renewals.discard)
            return self._allowed(lease, now)
        return None

    def _lock(self, key_id: uuid.UUID) -> asyncio.Lock:
        """The key's lock: one statement at a time per key, from this instance."""
        lock = self._locks.get(key_id)
        if lock is None:
            lock = self._locks[key_id] = asyncio.Lock()
        return lock

    async def renewals(self) -> None:
        """Wait for the renewals under way."""
        await asyncio.gather(*self._renewals, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel the renewals under way (shutdown): their keys' leases serve until they end."""
        for renewal in self._renewals:
            renewal.cancel()
        await self.renewals()

    async def _renew(self, key_id: uuid.UUID, limits: Limits, lease: _Lease) -> None:
        """A new lease for a key in steady use, taken while its current one still serves it, and
        replacing it when it arrives (the key has no quota: its unspent tokens have nothing to go
        back to; they count against the bucket until their window ends)."""
        async with self._lock(key_id):
            if self._leases.get(key_id) is not lease or lease.expires <= self._clock():
                return  # renewed or expired meanwhile: the request path takes it from here
            with contextlib.suppress(Exception):  # as if not renewed: requests will lease
                await self._lease(key_id, limits, 0, renewal=True)

    async def _lease(
        self, key_id: uuid.UUID, limits: Limits, cost: int, *, renewal: bool = False
    ) -> Decision:
        if self.availability.down:
            # Not asked of the database while it is known to be unreachable.
            if renewal:
                return Decision(limits=limits)
            return self._outage_lease(key_id, limits, cost)
        previous = self._leases.get(key_id)
        # A key this instance has not seen yet, or whose last lease outlived its use, is used
        # now and then here: it takes a long lease, so as not to cost a write per request.
        cold = previous is None or previous.limits != limits or previous.tokens >= cost
        rate = limits.rate
        if rate is not None:
            long_want = rate.long_lease_size(cost) if cold else None
            long = long_want is not None
            want = long_want if long_want is not None else rate.lease_size(cost)
            short_seconds = rate.lease_seconds
            burst, per_second = float(rate.burst), rate.rate
        else:
            long, want = cold, max(cost, QUOTA_LEASE_SIZE)
            short_seconds = QUOTA_LEASE_SECONDS
            burst = per_second = float(buckets.UNLIMITED)
        window_ms = max(1, int(short_seconds * 1000))
        long_window_ms = int(LONG_LEASE_SECONDS * 1000)
        # The lease lives no longer than the bucket's window that accounts for it.
        lifetime = (long_window_ms if long else window_ms) / 1000
        # What the previous lease left unspent goes back to the quota, and stops serving now; but
        # a lease being renewed ahead of its end serves until the new one replaces it.
        returned, unspent = 0, 0.0
        if previous is not None and not renewal:
            unspent, previous.tokens = previous.tokens, 0.0
            returned = int(unspent) if previous.limits == limits and not previous.outage else 0
        started = self._clock()
        try:
            result = await self._take(
                buckets.LeaseRequest(
                    key_id=key_id,
                    cost=cost,
                    want=want,
                    burst=burst,
                    rate=per_second,
                    window_ms=window_ms,
                    long_window_ms=long_window_ms,
                    long=long,
                    quota=limits.monthly_quota,
                    returned=returned,
                    create=previous is None,
                )
            )
        except BaseException as exc:
            # Rolled back, or never sent: those tokens are still the previous lease's to spend.
            if previous is not None and self._leases.get(key_id) is previous:
                previous.tokens += unspent
            if isinstance(exc, Exception) and not renewal and self.availability.failed(exc):
                return self._outage_lease(key_id, limits, cost)
            raise
        if result is None:
            raise UnknownKey()  # deleted while it was being verified
        if renewal and result.taken <= 0:
            return Decision(limits=limits)  # nothing to renew with now: the old lease serves on
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
            if long and limits.monthly_quota is None:
                # With a quota, renewals stay on the request path, which raises its alerts.
                lease.renew_at = started + lifetime * (1 - RENEW_AHEAD)
            return replace(self._allowed(lease, started), quota_leased=leased)
        quota_left = (limits.monthly_quota or 0) - result.quota_used
        if rate is None or (limits.monthly_quota is not None and quota_left < cost):
            lease.refusal = Refusal.quota
            wait = float(_seconds_to_next_month(datetime.now(UTC)))
            block = wait
        else:
            lease.refusal = Refusal.rate
            windows = (window_ms / 1000, long_window_ms / 1000)
            wait = self._rate_wait(rate, result, cost, *windows)
            # Ask the bucket again only once it can fill a lease, not a single request: an
            # instance over its limit then costs a write per lease, not per admitted request.
            block = self._rate_wait(rate, result, max(cost, min(want, rate.burst)), *windows)
        lease.blocked_until = started + min(block, MAX_LOCAL_BLOCK_SECONDS)
        lease.blocked_cost = cost
        return replace(self._refused(lease, max(1, math.ceil(wait))), quota_leased=leased)

    def _outage_lease(self, key_id: uuid.UUID, limits: Limits, cost: int) -> Decision:
        """While the database is unreachable (and cached keys are trusted): this instance admits
        the key's rate by itself, in windows of ``OUTAGE_WINDOW_SECONDS``, sharing nothing with
        the other instances (N instances admit up to N times the rate), within the monthly quota
        as last seen here."""
        if not self.availability.serves_cached():
            raise self.availability.error()
        now = self._clock()
        previous = self._leases.get(key_id)
        if previous is not None and previous.outage and previous.expires > now:
            # This window's tokens are spent: the next window grants more.
            if previous.refusal is None:
                previous.refusal = Refusal.rate if limits.rate is not None else Refusal.quota
            previous.blocked_until, previous.blocked_cost = previous.expires, cost
            return self._refused(previous, math.ceil(previous.expires - now))
        quota_used = 0
        if previous is not None:
            quota_used = previous.quota_used
            if previous.outage and math.isfinite(previous.granted):
                quota_used += int(previous.granted - previous.tokens)
        lease = _Lease(
            limits=limits,
            expires=now + OUTAGE_WINDOW_SECONDS,
            seen_at=now,
            quota_used=quota_used,
            outage=True,
        )
        tokens = math.inf
        if limits.rate is not None:
            tokens = min(limits.rate.burst, max(1.0, limits.rate.rate * OUTAGE_WINDOW_SECONDS))
        quota_left = math.inf
        if limits.monthly_quota is not None:
            quota_left = limits.monthly_quota - quota_used
        self._leases[key_id] = lease
        lease.granted = min(tokens, quota_left)
        if lease.granted >= cost:
            lease.tokens = lease.granted - cost
            return self._allowed(lease, now)
        lease.refusal = Refusal.quota if quota_left < cost else Refusal.rate
        lease.blocked_until = lease.expires
        lease.blocked_cost = cost
        return self._refused(lease, math.ceil(OUTAGE_WINDOW_SECONDS))

    async def _take(self, request: buckets.LeaseRequest) -> buckets.LeaseResult | None:
        """Lease in the next batch: requests for other keys that arrive while a batch is in
        flight go together in the next statement."""
        future: asyncio.Future[buckets.LeaseResult | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request.key_id] = (request, future)
        if self._leaser is None:
            self._leaser = asyncio.create_task(self._lease_batches())
        return await future

    async def _lease_batches(self) -> None:
        try:
            while self._pending:
                keys = list(itertools.islice(self._pending, buckets.MAX_BATCH))
                batch = [self._pending.pop(key_id) for key_id in keys]
                try:
                    metrics.LEASE_STATEMENTS.inc()
                    async with self.sessionmaker() as session:
                        results = await buckets.lease(session, [request for request, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                for request, future in batch:
                    # A request that gave up waiting leaves its lease unspent: lost, never lent.
                    if not future.done():
                        future.set_result(results.get(request.key_id))
        finally:
            self._leaser = None

    @staticmethod
    def _rate_wait(
        rate: RatePolicy,
        result: buckets.LeaseResult,
        cost: int,
        window: float,
        long_window: float,
    ) -> float:
        """How long until the bucket can have ``cost`` tokens: refill, and leases expiring."""
        wait = max(0.0, (cost - result.tokens) / rate.rate)
        window_end = max(0.0, (result.window + 1) * window - result.now_epoch)
        long_window_end = max(0.0, (result.long_window + 1) * long_window - result.now_epoch)
        # Each window's leases stop counting when the window after it ends.
        expiring = sorted(
            [
                (window_end, result.leased_previous),
                (window_end + window, result.leased_current),
                (long_window_end, result.long_leased_previous),
                (long_window_end + long_window, result.long_leased_current),
            ]
        )
        held = sum(tokens for _, tokens in expiring)
        for at, tokens in expiring:
            if rate.burst - held >= cost:
                break
            held -= tokens
            wait = max(wait, at)
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
        return max(0, quota - _quota_spent(lease)), _seconds_to_next_month(datetime.now(UTC))

    def unspent(self, key_id: uuid.UUID, limits: Limits) -> int:
        """Tokens this instance leased for the key and has not spent: the shared bucket counts
        them against the quota until they are given back, with the instance's next lease."""
        lease = self._leases.get(key_id)
        if lease is None or lease.outage or lease.limits != limits:
            return 0
        return int(lease.tokens)


def _quota_spent(lease: _Lease) -> int:
    """The quota spent as this instance knows it: the bucket's count when the lease was taken,
    less what is left of the lease (charged to the quota when leased, not yet spent); during an
    outage, plus what the outage's windows admitted."""
    if lease.outage:
        return lease.quota_used + int(lease.granted - lease.tokens)
    return lease.quota_used - int(lease.tokens)

"""The one verification code path, shared by keyservice's own API, /verify and forward-auth.

Lookup (the cache first; on a miss, the format check, then the database), revocation, expiry,
account and scopes, then the key's rate limit and quota, and a usage count: in that order, so that
a refused request never spends a token.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice import metrics
from keyservice.availability import Availability
from keyservice.config import Settings
from keyservice.errors import (
    DatabaseUnavailable,
    Forbidden,
    KeyServiceError,
    MalformedKey,
    MissingKey,
    QuotaExceeded,
    RateLimited,
    TooManyFailures,
    UnknownKey,
)
from keyservice.models import utcnow
from keyservice.ratelimit.limiter import Decision, Limiter, Refusal
from keyservice.ratelimit.policy import AlertThresholds, Limits
from keyservice.security import MAX_KEY_LENGTH, KeyFormatError, hash_key, parse_key
from keyservice.verification import service
from keyservice.verification.cache import KeyCache
from keyservice.verification.rendering import rate_limit_headers
from keyservice.verification.service import KeyRecord, UserPrincipal, Verified
from keyservice.verification.throttle import FailureThrottle


class Usage(Protocol):
    """Where verifications are counted (``keyservice.usage.recorder.UsageRecorder``)."""

    def record(
        self,
        key_id: uuid.UUID,
        account_id: uuid.UUID,
        endpoint: str | None,
        *,
        allowed: bool,
        rate_limited: bool = False,
        cost: int = 1,
    ) -> None: ...

    def limited(
        self,
        key_id: uuid.UUID,
        account_id: uuid.UUID,
        limits: Limits,
        decision: Decision,
        thresholds: AlertThresholds | None = None,
    ) -> None: ...


class Verifier:
    """Verifies keys with what it is given: the cache, the lookups' sessions, the failure
    throttle, the limiter and the usage recorder (``keyservice.runtime`` builds them)."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        cache: KeyCache,
        availability: Availability,
        throttle: FailureThrottle,
        limiter: Limiter,
        usage: Usage,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.cache = cache
        self.availability = availability
        self.throttle = throttle
        self.limiter = limiter
        self.usage = usage
        self.clock: Callable[[], datetime] = utcnow
        # Keys missing from the cache, waiting for the next lookup statement.
        self._lookups: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._looking_up: asyncio.Task[None] | None = None

    async def record(self, key_hash: str) -> KeyRecord | None:
        """The key's record: from the cache, else looked up (and cached) together with the other
        keys missing from the cache meanwhile, in one statement, as a new instance's first
        requests are: one round trip and one connection for many keys, not for each.

        ``key_hash`` must be that of a key that passed ``parse_key``: a cache hit is taken for a
        well-formed key without checking its format again."""
        record = self.cache.get(key_hash)
        if record is not None:
            return record
        if self.availability.down:
            # Not asked of the database while it is known to be unreachable: every request
            # would wait for a connection that cannot come.
            return self._stale(key_hash, self.availability.error())
        future = self._lookups.get(key_hash)
        if future is None:
            future = self._lookups[key_hash] = asyncio.get_running_loop().create_future()
            # Its exception is retrieved even when every request waiting for it gave up.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
        if self._looking_up is None:
            self._looking_up = asyncio.create_task(self._lookup_batches())
        # Shielded: a request that gives up must not cancel the others' wait.
        try:
            return await asyncio.shield(future)
        except DatabaseUnavailable as exc:
            return self._stale(key_hash, exc)

    def _stale(self, key_hash: str, unavailable: DatabaseUnavailable) -> KeyRecord:
        """During an outage: the key as cached before it, for as long as that may be trusted."""
        record = self.cache.get_stale(key_hash) if self.availability.serves_cached() else None
        if record is None:
            raise unavailable
        return record

    async def _lookup_batches(self) -> None:
        try:
            while self._lookups:
                hashes = list(itertools.islice(self._lookups, service.MAX_LOOKUPS))
                futures = [self._lookups.pop(key_hash) for key_hash in hashes]
                # An invalidation from now on may concern what the statement reads: such records
                # are not cached (KeyCache.put).
                generation = self.cache.generation
                try:
                    metrics.KEY_LOOKUPS.inc()
                    async with self.sessionmaker() as session:
                        records = await service.lookup(session, hashes, self.settings)
                except Exception as exc:
                    if self.availability.failed(exc):
                        exc = self.availability.error()
                    for future in futures:
                        future.set_exception(exc)
                    continue
                except BaseException:
                    # Cancelled: so are the lookups waiting for it, rather than left to hang.
                    for future in [*futures, *self._lookups.values()]:
                        future.cancel()
                    self._lookups.clear()
                    raise
                for key_hash, future in zip(hashes, futures, strict=True):
                    record = records.get(key_hash)
                    if record is not None:
                        self.cache.put(key_hash, record, generation=generation)
                    future.set_result(record)
        finally:
            self._looking_up = None

    async def verify_user(self, key: str | None, *, client_address: str | None) -> UserPrincipal:
        """Verify a user's key for the user's own things, whatever account it may reach."""
        record, _ = await self._authenticate(key, client_address)
        if record.user_id is None:
            raise Forbidden("This needs a user's key (a personal or session key)")
        return UserPrincipal(key=record, user_id=record.user_id, client_address=client_address)

    async def verify(
        self,
        key: str | None,
        *,
        scopes: Sequence[str] = (),
        account_id: uuid.UUID | None = None,
        client_address: str | None = None,
        endpoint: str | None = None,
        cost: int = 1,
        confined: bool = False,
        metered: bool = True,
    ) -> Verified:
        """Verify ``key`` for ``scopes`` on ``account_id``, within its limits; count the request
        as the key's usage of ``endpoint``; raise the reason it is refused.

        ``confined``: a key that does not reach ``account_id`` is unknown, whatever its state:
        the caller must not learn that it exists, nor that it was revoked. ``metered=False``:
        the request is not the product's API use (a console page), and is not counted in the
        usage; its limits apply all the same."""
        record, grace = await self._authenticate(
            key, client_address, confined_to=account_id if confined else None
        )
        try:
            principal = service.resolve(
                record, account_id=account_id, client_address=client_address
            )
        except KeyServiceError:
            if record.account_id is not None and metered:
                self.usage.record(record.id, record.account_id, endpoint, allowed=False)
            raise
        try:
            principal.require(*scopes)
        except KeyServiceError:
            if metered:
                self.usage.record(record.id, principal.account_id, endpoint, allowed=False)
            raise
        decision = None
        if record.limits.limited:
            decision = await self.limiter.check(record.id, record.limits, cost)
            self.usage.limited(
                record.id,
                principal.account_id,
                record.limits,
                decision,
                record.alerts.get(principal.account_id),
            )
            if not decision.allowed:
                metrics.rate_limit_refusal("quota" if decision.refused is Refusal.quota else "rate")
                if metered:
                    self.usage.record(
                        record.id, principal.account_id, endpoint, allowed=False, rate_limited=True
                    )
                error = QuotaExceeded if decision.refused is Refusal.quota else RateLimited
                raise error(decision, rate_limit_headers(decision))
        if metered:
            self.usage.record(record.id, principal.account_id, endpoint, allowed=True, cost=cost)
        return Verified(principal=principal, grace=grace, decision=decision)

    def _failed(self, client_address: str | None) -> None:
        # The failure that goes beyond the allowance is already answered with 429.
        retry_after = self.throttle.failure(client_address)
        if retry_after is not None:
            raise TooManyFailures(retry_after=retry_after)

    async def _authenticate(
        self,
        key: str | None,
        client_address: str | None,
        *,
        confined_to: uuid.UUID | None = None,
    ) -> tuple[KeyRecord, bool]:
        retry_after = self.throttle.retry_after(client_address)
        if retry_after is not None:
            raise TooManyFailures(retry_after=retry_after)
        if key is None:
            raise MissingKey(
                "Send the key as 'Authorization: Bearer <key>', 'Authorization: <key>' "
                "or 'x-api-key'"
            )
        # A cached key passed the format check when it was looked up: a cache hit costs the
        # hash alone (the length is checked first, so that no long string is hashed).
        record = None
        if len(key) <= MAX_KEY_LENGTH:
            key_hash = hash_key(key)
            record = self.cache.get(key_hash)
        metrics.cache_lookup(hit=record is not None)
        if record is None:
            try:
                key_hash = parse_key(key, self.settings.key_prefix).hash
            except KeyFormatError as exc:
                self._failed(client_address)
                raise MalformedKey(f"The API key is malformed ({exc})") from None
            record = await self.record(key_hash)
        if record is None:
            self._failed(client_address)
            raise UnknownKey()
        if confined_to is not None and confined_to not in (record.account_id, *record.roles):
            raise UnknownKey()
        return record, service.authenticate(record, key_hash, self.clock())

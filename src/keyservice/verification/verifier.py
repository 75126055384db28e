"""The one verification code path, shared by keyservice's own API, /verify and forward-auth."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.config import Settings
from keyservice.errors import Forbidden, MalformedKey, MissingKey, TooManyFailures, UnknownKey
from keyservice.models import utcnow
from keyservice.scopes import catalogue
from keyservice.security import KeyFormatError, parse_key
from keyservice.verification import service
from keyservice.verification.cache import KeyCache
from keyservice.verification.service import KeyRecord, Principal, UserPrincipal
from keyservice.verification.throttle import FailureThrottle


@dataclass(frozen=True, slots=True)
class Verified:
    principal: Principal
    # Whether the presented secret is the previous one of a rotated key, in its grace period.
    grace: bool


class Verifier:
    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], cache: KeyCache
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.cache = cache
        self.clock: Callable[[], datetime] = utcnow
        self.catalogue = catalogue(settings.scopes)
        self.throttle = FailureThrottle(
            per_minute=settings.verify_failures_per_minute,
            block_seconds=settings.verify_block_seconds,
        )

    async def record(self, key_hash: str) -> KeyRecord | None:
        """The key's record: from the cache, else one indexed SELECT (and cached)."""
        record = self.cache.get(key_hash)
        if record is not None:
            return record
        generation = self.cache.generation
        async with self.sessionmaker() as session:
            record = await service.lookup(session, key_hash)
        if record is not None:
            self.cache.put(key_hash, record, generation=generation)
        return record

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
    ) -> Verified:
        """Verify ``key`` for ``scopes`` on ``account_id``; raise the reason it is refused."""
        record, grace = await self._authenticate(key, client_address)
        principal = service.resolve(
            record,
            account_id=account_id,
            catalogue=self.catalogue,
            client_address=client_address,
        )
        principal.require(*scopes)
        return Verified(principal=principal, grace=grace)

    def _failed(self, client_address: str | None) -> None:
        # The failure that goes beyond the allowance is already answered with 429.
        retry_after = self.throttle.failure(client_address)
        if retry_after is not None:
            raise TooManyFailures(retry_after=retry_after)

    async def _authenticate(
        self, key: str | None, client_address: str | None
    ) -> tuple[KeyRecord, bool]:
        retry_after = self.throttle.retry_after(client_address)
        if retry_after is not None:
            raise TooManyFailures(retry_after=retry_after)
        if key is None:
            raise MissingKey(
                "Send the key as 'Authorization: Bearer <key>', 'Authorization: <key>' "
                "or 'x-api-key'"
            )
        try:
            parsed = parse_key(key, self.settings.key_prefix)
        except KeyFormatError as exc:
            self._failed(client_address)
            raise MalformedKey(f"The API key is malformed ({exc})") from None
        record = await self.record(parsed.hash)
        if record is None:
            self._failed(client_address)
            raise UnknownKey()
        return record, service.authenticate(record, parsed.hash, self.clock())

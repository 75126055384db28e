"""An optional in-process cache of valid ``/v1/verify`` answers.

The trade, to make knowingly: a key revoked (or rotated, or narrowed) in keyservice keeps passing
in this process for up to ``ttl`` seconds, the time its last valid answer stays cached. In
exchange, a key seen again within ``ttl`` costs no call to keyservice.

What is never cached:

- refusals, of any kind: a key that was refused is asked about again every time, so a new key,
  a widened permission or an account that is back is seen at once;
- answers for keys with a rate limit or a monthly quota: their requests must reach keyservice,
  whose limits are the only ones that hold across processes;
- anything past the key's expiry, or past the end of a rotated secret's grace period.

Cached answers are not counted in the key's usage in keyservice (nor in its ``last_used_at``).
Only a SHA-256 of each key is kept, never the key itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from keyservice_client.models import Unset, Verdict, VerifyRequest

MAX_TTL_SECONDS = 30.0

_CacheKey = tuple[str, str, tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class _Entry:
    verdict: Verdict
    stored_at: float
    until: float


class VerifyCache:
    """Valid verdicts for at most ``ttl`` seconds (at most 30), at most ``max_entries`` of
    them (least recently used out first). ``clock`` gives the time in seconds since the epoch
    (``time.time``); tests give their own."""

    def __init__(
        self,
        ttl: float = 5.0,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl must be more than 0 and at most {MAX_TTL_SECONDS:g} seconds")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[_CacheKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, request: VerifyRequest, caller: str | None) -> Verdict | None:
        """The cached verdict for this question, marked ``cached``, if still good."""
        key = _cache_key(request, caller)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            # A clock that went back counts as expiry: an entry never outlives its ttl.
            if not entry.stored_at <= now < entry.until:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return dataclasses.replace(entry.verdict, cached=True)

    def put(self, request: VerifyRequest, caller: str | None, verdict: Verdict) -> None:
        """Keep ``verdict`` if it may be kept (see the module's docstring)."""
        if not verdict.valid or verdict.key is None or verdict.rate_limit is not None:
            return
        now = self._clock()
        until = now + self.ttl
        if verdict.key.expires_at is not None:
            until = min(until, verdict.key.expires_at.timestamp())
        if verdict.key.rotated:
            if verdict.key.rotated_secret_expires_at is None:
                return
            until = min(until, verdict.key.rotated_secret_expires_at.timestamp())
        if until <= now:
            return
        key = _cache_key(request, caller)
        with self._lock:
            self._entries[key] = _Entry(verdict, now, until)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _cache_key(request: VerifyRequest, caller: str | None) -> _CacheKey:
    # The answer depends on the key, the caller (an authenticated caller only sees its own
    # account's keys), the account asked about and the scopes asked for; not on the endpoint
    # or the cost, which only count for keys with limits, never cached.
    scopes = () if isinstance(request.scopes, Unset) else tuple(sorted(set(request.scopes)))
    account = "" if isinstance(request.account_id, Unset) else request.account_id.lower()
    return (_digest(request.key), _digest(caller) if caller else "", scopes, account)

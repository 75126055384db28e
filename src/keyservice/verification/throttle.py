"""Slowing down guessing: failed verifications per client address, in memory.

Counted per instance on purpose: a shared counter would let garbage requests cause a database write
each, which is the very load this guards against. With N instances behind a balancer a client gets
at most N times the allowance before every instance blocks it.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class FailureThrottle:
    """A token bucket of failures per client address; emptying it blocks for a while."""

    def __init__(
        self,
        *,
        per_minute: int,
        block_seconds: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.block_seconds = block_seconds
        self.max_clients = max_clients
        self._clock = clock
        # address -> (tokens, last update, blocked until)
        self._clients: OrderedDict[str, tuple[float, float, float]] = OrderedDict()

    def retry_after(self, address: str | None) -> int | None:
        """Seconds until ``address`` may try again, or None if it is not blocked."""
        if address is None or self.capacity <= 0:
            return None
        state = self._clients.get(address)
        if state is None:
            return None
        remaining = state[2] - self._clock()
        return math.ceil(remaining) if remaining > 0 else None

    def failure(self, address: str | None) -> int | None:
        """Count a failure; return the seconds to wait if it went beyond the allowance."""
        if address is None or self.capacity <= 0:
            return None
        now = self._clock()
        tokens, updated, blocked_until = self._clients.pop(address, (self.capacity, now, 0.0))
        tokens = min(self.capacity, tokens + (now - updated) * self.refill_per_second) - 1
        if tokens < 0:
            blocked_until = now + self.block_seconds
            tokens = 0
        self._clients[address] = (tokens, now, blocked_until)
        if len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return self.block_seconds if blocked_until > now else None

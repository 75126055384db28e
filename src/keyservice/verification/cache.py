"""The in-process cache of key records, and how it learns of changes.

Verification looks keys up here first, so that a steady stream of requests with the same keys costs
no database round trip. Correctness rests on invalidation, not on the TTL:

- every change that alters what verification would answer (revoke, rotate, rename, delete, an
  application's permissions, a user's memberships) calls ``keyservice.invalidations.invalidate()``
  inside its transaction.
  On PostgreSQL that sends ``NOTIFY keyservice_keys``, which the database delivers to every
  instance's listener when, and only if, the transaction commits. Every instance, this one included,
  drops the matching entries. The request's own instance also drops them right after its commit,
  without waiting for the round trip;
- a lookup that raced with an invalidation (it read the row before the change committed and would
  store it after the entry was dropped) is not stored: ``put`` refuses entries whose lookup started
  before the latest invalidation (the cache's ``generation``);
- if the listener's connection drops, notifications may have been missed: the cache serves nothing
  and stores nothing until it reconnects, and is cleared then. What it held is kept meanwhile for
  one use only: while the database itself is unreachable, keys verified before keep verifying
  for a bounded time (``get_stale``, ``keyservice.availability``); the TTL bounds the damage of
  anything else;
- unknown keys are never cached, so a new key verifies at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import asyncpg
from sqlalchemy.engine import URL

from keyservice.availability import describe
from keyservice.invalidations import CHANNEL, Target
from keyservice.verification.service import KeyRecord

logger = logging.getLogger(__name__)


def _targets(record: KeyRecord) -> Iterable[Target]:
    yield Target("key", record.id)
    if record.application_id is not None:
        yield Target("application", record.application_id)
    if record.user_id is not None:
        yield Target("user", record.user_id)
    # An account's settings that its keys' records carry (their alert thresholds).
    for account_id in record.alerts:
        yield Target("account", account_id)


class KeyCache:
    """A bounded LRU of key records by hash, with a TTL and invalidation by target."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[KeyRecord, float]] = OrderedDict()
        self._by_target: dict[Target, set[str]] = {}
        self.generation = 0
        # Off while invalidations cannot be received (the listener is reconnecting).
        self.enabled = True

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str) -> KeyRecord | None:
        if not self.enabled:
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        record, expires = entry
        if expires <= self._clock():
            self._remove(key_hash)
            return None
        self._entries.move_to_end(key_hash)
        return record

    def get_stale(self, key_hash: str) -> KeyRecord | None:
        """The record as last cached, even while the cache is suspended: for a database outage,
        when nothing fresher can be had."""
        entry = self._entries.get(key_hash)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def put(self, key_hash: str, record: KeyRecord, *, generation: int) -> None:
        """Store ``record`` unless an invalidation happened since its lookup began."""
        if generation != self.generation or not self.enabled:
            return
        if key_hash in self._entries:
            self._remove(key_hash)
        self._entries[key_hash] = (record, self._clock() + self.ttl)
        for target in _targets(record):
            self._by_target.setdefault(target, set()).add(key_hash)
        while len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))

    def invalidate(self, target: Target) -> None:
        self.generation += 1
        for key_hash in self._by_target.pop(target, ()):
            self._remove(key_hash)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_target.clear()

    def suspend(self) -> None:
        """Serve and store nothing until ``resume``; what is held stays for ``get_stale``."""
        self.enabled = False
        self.generation += 1

    def resume(self) -> None:
        self.clear()
        self.enabled = True

    def _remove(self, key_hash: str) -> None:
        entry = self._entries.pop(key_hash, None)
        if entry is None:
            return
        for target in _targets(entry[0]):
            hashes = self._by_target.get(target)
            if hashes is not None:
                hashes.discard(key_hash)
                if not hashes:
                    del self._by_target[target]


class Listener:
    """LISTENs for invalidations on a dedicated PostgreSQL connection, reconnecting as needed."""

    def __init__(self, url: URL, cache: KeyCache, *, ping_seconds: float = 10.0) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._cache = cache
        self._ping_seconds = ping_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        # Whether the loss of the connection was logged: once per loss, not once per retry.
        self._lost_logged = False

    async def start(self) -> None:
        self._cache.suspend()
        self._task = asyncio.create_task(self._run(), name="keyservice-invalidation-listener")
        # Serve only once invalidations are flowing, so that no change is missed at startup.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _lost(self, lost: asyncio.Event, _connection: object) -> None:
        self._cache.suspend()
        lost.set()

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        target = Target.decode(payload)
        if target is None:
            logger.warning("ignoring a malformed invalidation on %s", CHANNEL)
            return
        self._cache.invalidate(target)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                lost = asyncio.Event()
                # Told at once when the server closes the connection, rather than at the next
                # ping: meanwhile, notifications would go unheard and the cache serve stale keys.
                connection.add_termination_listener(functools.partial(self._lost, lost))
                await connection.add_listener(CHANNEL, self._on_notify)
                # Whatever happened while we were not listening is unknown: start afresh.
                self._cache.resume()
                self.connected.set()
                if self._lost_logged:
                    logger.info("invalidation listener connected again; the key cache restarts")
                    self._lost_logged = False
                delay = 0.5
                while True:
                    # Not wait_for: on Python 3.11 it swallows a cancel that comes as the
                    # connection is lost, and the listener would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._ping_seconds):
                            await lost.wait()
                    if lost.is_set():
                        raise ConnectionError("the listening connection was closed")
                    # A half-open connection shows no end: the ping finds it.
                    await connection.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                self._cache.suspend()
                if not self._lost_logged:
                    logger.info(
                        "invalidation listener lost its connection (%s); the key cache is off "
                        "until it is back",
                        describe(exc),
                    )
                    self._lost_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()

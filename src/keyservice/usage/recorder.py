"""Usage counters, aggregated in memory and written in batches.

Each verification of a known key adds one to a counter per (key, account, endpoint, hour), allowed
and refused apart. Every ``usage_flush_seconds`` (and when the app shuts down) the counters are
written with one multi-row ``INSERT ... ON CONFLICT DO UPDATE`` per ten thousand rows (and their
rollups by account and hour, and by key and day, which usage pages read), in the same
transaction as the keys' ``last_used_at`` (one ``UPDATE`` per ten thousand keys; each key's at
most once a minute per instance) and any alert events. The statements are fixed, whatever the
number of rows (``keyservice.json_rows.JsonRows``): they are compiled once, not per flush, which
would hold up every request for as long.

Nothing one row holds can stop the others: a flush the database refuses for its data is split in
halves, each written in a transaction of its own, until the rows it refuses are alone; those are
dropped, counted (``dropped_rows``) and logged by key, and every other row is written. A flush
that cannot reach the database keeps its counts for the next one, up to ``max_pending_rows``
counters (new ones beyond are dropped and counted), and is not tried while the database is known
to be unreachable. A crash loses at most what was counted since the last flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, String, Table, Uuid, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice import metrics
from keyservice.availability import Availability, describe
from keyservice.db import dialect_upsert
from keyservice.events import service as events_service
from keyservice.events.catalogue import BY_TYPE
from keyservice.fields import MAX_ENDPOINT_LENGTH
from keyservice.json_rows import JsonRows
from keyservice.models import Account, ApiKey, UsageAccountHour, UsageCounter, UsageKeyDay, utcnow
from keyservice.models.base import UTCDateTime
from keyservice.ratelimit.limiter import Decision
from keyservice.ratelimit.policy import AlertThresholds, Limits
from keyservice.usage.alerts import Alerts, PendingEvent

logger = logging.getLogger(__name__)

OTHER = "other"
UNSPECIFIED = "unspecified"
ROWS_PER_STATEMENT = 10_000
# A key's last_used_at is written again by an instance only once it moved on by this much: a busy
# key would otherwise cost its row an update every second. What it says lags by at most as much.
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(slots=True)
class _Batch:
    counts: dict[tuple[uuid.UUID, uuid.UUID, str, datetime], list[int]] = field(
        default_factory=dict
    )
    last_used: dict[uuid.UUID, datetime] = field(default_factory=dict)
    events: dict[str, PendingEvent] = field(default_factory=dict)
    # The rate-limited alert's threshold of the keys refused by their limits, per account (from
    # their cached records): not rows of their own, but what the flush decides alerts with.
    thresholds: dict[tuple[uuid.UUID, uuid.UUID], int] = field(default_factory=dict)

    def merge(self, other: _Batch) -> None:
        for counter, counts in other.counts.items():
            mine = self.counts.setdefault(counter, [0, 0, 0])
            for i, n in enumerate(counts):
                mine[i] += n
        for key_id, at in other.last_used.items():
            self.last_used[key_id] = max(at, self.last_used.get(key_id, at))
        self.events = other.events | self.events
        self.thresholds = other.thresholds | self.thresholds

    def __bool__(self) -> bool:
        return bool(self.counts or self.last_used or self.events)

    def __len__(self) -> int:
        return len(self.counts) + len(self.last_used) + len(self.events)

    def halves(self) -> tuple[_Batch, _Batch]:
        """The batch in two non-empty parts (it holds two items or more)."""
        parts: tuple[dict[Any, Any], ...] = (self.counts, self.last_used, self.events)
        items = [(kind, k, v) for kind, part in enumerate(parts) for k, v in part.items()]
        halves = _Batch(), _Batch()
        for i, (kind, k, v) in enumerate(items):
            half = halves[0] if i < len(items) // 2 else halves[1]
            part: dict[Any, Any] = (half.counts, half.last_used, half.events)[kind]
            part[k] = v
        for half in halves:
            half.thresholds = dict(self.thresholds)
        return halves


class UsageRecorder:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_endpoints: int,
        alerts: Alerts | None = None,
        max_pending_rows: int = 100_000,
        availability: Availability | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.availability = availability or Availability(grace_seconds=0)
        self.max_endpoints = max_endpoints
        self.max_pending_rows = max_pending_rows
        # Rows the database refused for their data, and new counters beyond max_pending_rows.
        self.dropped_rows = 0
        # When the oldest count not yet written was made (monotonic), for the flush's lag.
        self._counting_since: float | None = None
        self._over_bound_logged = False
        self.alerts = alerts or Alerts()
        self._clock = clock
        self._batch = _Batch()
        # Endpoints counted apart this hour, per key (this instance's view).
        self._endpoints: dict[tuple[uuid.UUID, datetime], set[str]] = {}
        # The last_used_at this instance wrote per key, within LAST_USED_EVERY; oldest first.
        self._written: dict[uuid.UUID, datetime] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def record(
        self,
        key_id: uuid.UUID,
        account_id: uuid.UUID,
        endpoint: str | None,
        *,
        allowed: bool,
        rate_limited: bool = False,
        cost: int = 1,
    ) -> None:
        now = self._clock()
        hour = now.replace(minute=0, second=0, microsecond=0)
        name = (endpoint or UNSPECIFIED)[:MAX_ENDPOINT_LENGTH]
        seen = self._endpoints.get((key_id, hour))
        if seen is None:
            seen = self._endpoints[(key_id, hour)] = set()
        if name not in seen:
            if len(seen) >= self.max_endpoints:
                name = OTHER
            else:
                seen.add(name)
        counter = self._batch.counts.get((key_id, account_id, name, hour))
        if counter is None:
            if len(self._batch.counts) >= self.max_pending_rows:
                self._over_bound()
                return
            if not self._batch.counts and self._counting_since is None:
                self._counting_since = time.monotonic()
            counter = self._batch.counts[(key_id, account_id, name, hour)] = [0, 0, 0]
        counter[0 if allowed else 1] += cost
        if rate_limited:
            counter[2] += 1
        self._batch.last_used[key_id] = now

    def limited(
        self,
        key_id: uuid.UUID,
        account_id: uuid.UUID,
        limits: Limits,
        decision: Decision,
        thresholds: AlertThresholds | None = None,
    ) -> None:
        """What the limiter decided for a request of the key: the quota alerts it raises, and,
        for a refusal, the threshold of the rate-limited alert that the next flush checks."""
        for event in self.alerts.quota(key_id, account_id, limits, decision, thresholds):
            self._batch.events[event.dedupe_key] = event
        if not decision.allowed:
            self._batch.thresholds[(key_id, account_id)] = (
                thresholds or self.alerts.defaults
            ).rate_limited_refusals

    def lag_seconds(self) -> float:
        """How long the oldest count not yet written has waited (0 when all are written)."""
        since = self._counting_since
        return 0.0 if since is None else time.monotonic() - since

    def _over_bound(self) -> None:
        self.dropped_rows += 1
        metrics.USAGE_DROPPED_ROWS.inc()
        if not self._over_bound_logged:
            logger.warning(
                "usage counters waiting to be written reached %d; new ones are dropped until "
                "they can be written",
                self.max_pending_rows,
            )
            self._over_bound_logged = True

    async def flush(self) -> int:
        """Write what was counted since the last flush; return the number of counter rows
        written."""
        async with self._lock:
            if not self._batch or self.availability.down:
                return 0
            began = time.monotonic()
            since, self._counting_since = self._counting_since, None
            batch, self._batch = self._batch, _Batch()
            parts, written, rows = [batch], [], 0
            while parts:
                part = parts.pop()
                try:
                    async with self.sessionmaker() as session, session.begin():
                        written += await self._write(session, part)
                except BaseException as exc:
                    if isinstance(exc, Exception) and not self.availability.failed(exc):
                        if len(part) > 1:
                            parts.extend(reversed(part.halves()))
                        else:
                            self._drop(part, exc)
                        continue
                    # Unreachable, or cancelled mid-write (shutdown): what is not written yet is
                    # kept for the next flush (the final one writes it), not lost.
                    for unwritten in parts:
                        part.merge(unwritten)
                    part.merge(self._batch)
                    self._batch = part
                    self._counting_since = since
                    if not isinstance(exc, Exception):
                        raise
                    break
                rows += len(part.counts)
            self._prune_endpoints()
            self._remember_written(written)
            if not self._batch:
                self._over_bound_logged = False
            metrics.USAGE_FLUSH_SECONDS.observe(time.monotonic() - began)
            return rows

    def _drop(self, part: _Batch, exc: Exception) -> None:
        """A row the database refuses whatever the others: dropped, counted, and logged by its
        key only (an endpoint is the client's text, and may hold anything)."""
        self.dropped_rows += 1
        metrics.USAGE_DROPPED_ROWS.inc()
        key_ids: list[uuid.UUID | None] = [c[0] for c in part.counts] or [*part.last_used]
        key_ids += [e.key_id for e in part.events.values()]
        logger.error(
            "usage flush dropped a row the database refuses (key %s): %s",
            key_ids[0] if key_ids else None,
            describe(exc),
        )

    async def _write(
        self, session: AsyncSession, batch: _Batch
    ) -> list[tuple[uuid.UUID, datetime]]:
        """Write ``batch``; return the keys whose last_used_at it wrote, and when they were used."""
        name = session.get_bind().dialect.name
        counts = [(*counter, *counted) for counter, counted in batch.counts.items()]
        for chunk in _in_key_order(counts, lambda row: (row[0].int, row[2], row[3])):
            await session.execute(_count_statement(name), _counts(name).bind(chunk))
        # The rollups that usage pages read, from the same counts, in the same transaction.
        hours, days = _rollups(batch.counts)
        for chunk in _in_key_order(hours, lambda row: (row[0].int, row[1], row[2])):
            await session.execute(_account_hours_statement(name), _account_hours(name).bind(chunk))
        for chunk in _in_key_order(days, lambda row: (row[0].int, row[1])):
            await session.execute(_key_days_statement(name), _key_days(name).bind(chunk))
        written = [
            (key_id, at)
            for key_id, at in batch.last_used.items()
            if key_id not in self._written or at - self._written[key_id] >= LAST_USED_EVERY
        ]
        # To the second (never after the use): a flush's keys then share a handful of times,
        # each encoded once.
        touches = [(key_id, at.replace(microsecond=0)) for key_id, at in written]
        for chunk in _in_key_order(touches, lambda row: row[0].int):
            await session.execute(_touch_statement(name), _touches(name).bind(chunk))
        default = self.alerts.defaults.rate_limited_refusals
        limited = {
            (key_id, account_id, hour): batch.thresholds.get((key_id, account_id), default)
            for (key_id, account_id, _, hour), (_, _, rate_limited) in batch.counts.items()
            if rate_limited
        }
        for event in self.alerts.rate_limited(await self._rate_limited(session, limited)):
            batch.events.setdefault(event.dedupe_key, event)
        if batch.events:
            await self._write_events(session, batch.events.values())
        return written

    async def _rate_limited(
        self, session: AsyncSession, limited: dict[tuple[uuid.UUID, uuid.UUID, datetime], int]
    ) -> list[tuple[uuid.UUID, uuid.UUID, datetime, int, int]]:
        """Keys refused by their limits at least their alert's number of times in an hour
        (``limited``: the keys refused since the last flush, with their thresholds)."""
        if not limited:
            return []
        hours = {hour for _, _, hour in limited}
        keys = {key_id for key_id, _, _ in limited}
        rows = await session.execute(
            select(
                UsageCounter.key_id,
                UsageCounter.account_id,
                UsageCounter.hour,
                func.sum(UsageCounter.rate_limited),
            )
            .where(UsageCounter.key_id.in_(keys), UsageCounter.hour.in_(hours))
            .group_by(UsageCounter.key_id, UsageCounter.account_id, UsageCounter.hour)
            .having(func.sum(UsageCounter.rate_limited) >= min(limited.values()))
        )
        return [
            (k, a, h, int(n), limited[(k, a, h)])
            for k, a, h, n in rows.all()
            if (k, a, h) in limited
        ]

    @staticmethod
    async def _write_events(session: AsyncSession, events: Iterable[PendingEvent]) -> None:
        # A payload that is not its documented shape fails here, inside the flush: the row is
        # then isolated and dropped like any other the database refuses.
        await events_service.record_many(
            session,
            [
                events_service.NewEvent(
                    account_id=e.account_id,
                    data=BY_TYPE[e.type].model.model_validate(e.data),
                    key_id=e.key_id,
                    dedupe_key=e.dedupe_key,
                )
                for e in events
            ],
        )

    def _remember_written(self, written: list[tuple[uuid.UUID, datetime]]) -> None:
        for key_id, at in written:
            self._written.pop(key_id, None)  # to the end: the dict stays oldest first
            self._written[key_id] = at
        forgotten = self._clock() - LAST_USED_EVERY
        old = itertools.takewhile(lambda entry: entry[1] < forgotten, self._written.items())
        for key_id in [key_id for key_id, _ in old]:
            del self._written[key_id]

    def _prune_endpoints(self) -> None:
        hour = self._clock().replace(minute=0, second=0, microsecond=0)
        for stale in [k for k in self._endpoints if k[1] < hour]:
            del self._endpoints[stale]

    async def start(self, interval: float) -> None:
        self._stopping = asyncio.Event()

        async def run() -> None:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=interval)
                await self.flush()

        self._task = asyncio.create_task(run(), name="keyservice-usage-flusher")

    async def stop(self) -> None:
        """Write what is left and stop (graceful shutdown). A flush under way is let finish, not
        cancelled: cancelled mid-write, it could leave its connection holding the database's
        write lock (SQLite)."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        await self.flush()


def _in_key_order(
    rows: list[tuple[Any, ...]], key: Callable[[tuple[Any, ...]], Any]
) -> Iterator[list[tuple[Any, ...]]]:
    """``rows`` in statements of at most ROWS_PER_STATEMENT. Each statement locks its rows in key
    order; across statements, so must the chunks be, so that concurrent flushes cannot deadlock
    (UUIDs order as their integers). A single statement needs no sorting here."""
    if len(rows) > ROWS_PER_STATEMENT:
        rows = sorted(rows, key=key)
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start : start + ROWS_PER_STATEMENT]


_COUNT_COLUMNS = {
    "key_id": Uuid,
    "account_id": Uuid,
    "endpoint": String,
    "hour": UTCDateTime,
    "allowed": BigInteger,
    "refused": BigInteger,
    "rate_limited": BigInteger,
}


def _counts(dialect: str) -> JsonRows:
    return JsonRows(dialect, _COUNT_COLUMNS, name="counted", param="counts")


_ACCOUNT_HOUR_COLUMNS = {
    "account_id": Uuid,
    "hour": UTCDateTime,
    "endpoint": String,
    "allowed": BigInteger,
    "refused": BigInteger,
    "rate_limited": BigInteger,
}
_KEY_DAY_COLUMNS = {
    "key_id": Uuid,
    "day": UTCDateTime,
    "account_id": Uuid,
    "allowed": BigInteger,
    "refused": BigInteger,
    "rate_limited": BigInteger,
}


def _rollups(
    counts: dict[tuple[uuid.UUID, uuid.UUID, str, datetime], list[int]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The batch's counts by account, hour and endpoint, and by key and day."""
    hours: dict[tuple[uuid.UUID, datetime, str], list[int]] = {}
    days: dict[tuple[uuid.UUID, datetime, uuid.UUID], list[int]] = {}
    for (key_id, account_id, endpoint, hour), counted in counts.items():
        day = hour.replace(hour=0)
        for totals in (
            hours.setdefault((account_id, hour, endpoint), [0, 0, 0]),
            days.setdefault((key_id, day, account_id), [0, 0, 0]),
        ):
            for i, n in enumerate(counted):
                totals[i] += n
    return (
        [(*rollup, *totals) for rollup, totals in hours.items()],
        [(*rollup, *totals) for rollup, totals in days.items()],
    )


def _account_hours(dialect: str) -> JsonRows:
    return JsonRows(dialect, _ACCOUNT_HOUR_COLUMNS, name="hourly", param="hourly")


def _key_days(dialect: str) -> JsonRows:
    return JsonRows(dialect, _KEY_DAY_COLUMNS, name="daily", param="daily")


def _adding_upsert(
    dialect: str,
    rows: JsonRows,
    model: Any,
    *,
    owner: tuple[str, Any],
    order: tuple[str, ...],
) -> Any:
    """One upsert of ``rows`` into ``model``'s table, whatever their number (they travel as
    one JSON parameter), adding their counts to the rows already there; rows whose ``owner``
    (a column, and the id it must be in) is gone are dropped, and rows are locked in ``order``
    (the table's key), so that concurrent flushes cannot deadlock."""
    counted = rows.table()
    table = typing.cast(Table, model.__table__)
    column, owners = owner
    kept = (
        select(*counted.c)
        .where(counted.c[column].in_(select(owners)))
        .order_by(*(counted.c[name] for name in order))
    )
    statement = dialect_upsert(dialect, table).from_select(list(counted.c.keys()), kept)
    return statement.on_conflict_do_update(
        index_elements=list(order),
        set_={
            name: table.c[name] + getattr(statement.excluded, name)
            for name in ("allowed", "refused", "rate_limited")
        },
    )


@functools.cache
def _account_hours_statement(dialect: str) -> Any:
    """The accounts' hourly rollup."""
    return _adding_upsert(
        dialect,
        _account_hours(dialect),
        UsageAccountHour,
        owner=("account_id", Account.id),
        order=("account_id", "hour", "endpoint"),
    )


@functools.cache
def _key_days_statement(dialect: str) -> Any:
    """The keys' daily rollup; a key deleted since it was counted has none to keep."""
    return _adding_upsert(
        dialect,
        _key_days(dialect),
        UsageKeyDay,
        owner=("key_id", ApiKey.id),
        order=("key_id", "day"),
    )


def _touches(dialect: str) -> JsonRows:
    return JsonRows(dialect, {"key_id": Uuid, "at": UTCDateTime}, name="used", param="used")


@functools.cache
def _count_statement(dialect: str) -> Any:
    """One multi-row upsert of counters, whatever their number: the rows travel as one JSON
    parameter. A key deleted since it was counted has no counters to keep."""
    return _adding_upsert(
        dialect,
        _counts(dialect),
        UsageCounter,
        owner=("key_id", ApiKey.id),
        order=("key_id", "endpoint", "hour"),
    )


@functools.cache
def _touch_statement(dialect: str) -> Any:
    """``last_used_at`` of many keys in one statement, never moving it backwards, and not
    touching ``updated_at``: using a key is no change to it. Rows are locked in key order."""
    used = _touches(dialect).table()
    keys = typing.cast(Table, ApiKey.__table__)
    locked = (
        select(keys.c.id, used.c.at)
        .join_from(keys, used, keys.c.id == used.c.key_id)
        .where(keys.c.last_used_at.is_(None) | (keys.c.last_used_at < used.c.at))
        .order_by(keys.c.id)
        .with_for_update(of=keys, key_share=True)
        .cte("touched")
    )
    return (
        update(keys)
        .where(keys.c.id == locked.c.id)
        .values(last_used_at=locked.c.at, updated_at=keys.c.updated_at)
    )

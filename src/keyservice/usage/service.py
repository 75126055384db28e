"""Reading usage: current hour and month, a series by hour or day, the busiest endpoints and keys,
and what is left of a quota. Counts are as of the last flush (about a second behind)."""

from __future__ import annotations

import uuid
from calendar import monthrange
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.config import Settings
from keyservice.errors import ValidationFailed
from keyservice.models import (
    ApiKey,
    Application,
    UsageAccountHour,
    UsageCounter,
    UsageKeyDay,
    utcnow,
)
from keyservice.ratelimit import buckets
from keyservice.ratelimit.limiter import Limiter
from keyservice.ratelimit.policy import Limits, effective_limits
from keyservice.ratelimit.schemas import RateLimit
from keyservice.usage.schemas import (
    Counts,
    EndpointCounts,
    Granularity,
    KeyCounts,
    Point,
    Series,
)
from keyservice.usage.schemas import Limits as LimitsOut

MAX_POINTS = {Granularity.hour: 24 * 31, Granularity.day: 366}
DEFAULT_SPAN = {Granularity.hour: timedelta(hours=24), Granularity.day: timedelta(days=30)}
TOP = 10

_total = func.sum(UsageCounter.allowed + UsageCounter.refused)
_SUMS = (
    func.sum(UsageCounter.allowed),
    func.sum(UsageCounter.refused),
    func.sum(UsageCounter.rate_limited),
)


def _floor(moment: datetime, granularity: Granularity) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity is Granularity.day else moment


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    return month_start(now) + timedelta(days=monthrange(now.year, now.month)[1])


def window(
    granularity: Granularity, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """``[start, end)`` aligned to the granularity; the default is the last day (by hour) or the
    last 30 days (by day), up to now."""
    step = timedelta(hours=1) if granularity is Granularity.hour else timedelta(days=1)
    try:
        # By default the series ends with the current hour or day, included.
        end = _floor(end, granularity) if end else _floor(utcnow(), granularity) + step
        start = _floor(start, granularity) if start else end - DEFAULT_SPAN[granularity]
    except OverflowError:
        raise ValidationFailed("`start` or `end` is out of range") from None
    if start >= end:
        raise ValidationFailed("`start` must be before `end`")
    if (end - start) / step > MAX_POINTS[granularity]:
        raise ValidationFailed(
            f"At most {MAX_POINTS[granularity]} points by {granularity.value}; narrow the range"
        )
    return start, end


def _sums(table: Any) -> tuple[Any, Any, Any]:
    return func.sum(table.allowed), func.sum(table.refused), func.sum(table.rate_limited)


async def _counts(
    session: AsyncSession, table: Any, scope: ColumnElement[bool], now: datetime
) -> tuple[Counts, Counts]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    recent = table.hour >= hour
    columns = (table.allowed, table.refused, table.rate_limited)
    row = (
        await session.execute(
            select(
                *(func.coalesce(func.sum(case((recent, c), else_=0)), 0) for c in columns),
                *(func.coalesce(func.sum(c), 0) for c in columns),
            ).where(scope, table.hour >= month_start(now))
        )
    ).one()
    return _counts_of(row[:3]), _counts_of(row[3:])


def _counts_of(values: Sequence[Any]) -> Counts:
    allowed, refused, rate_limited = (int(v) for v in values)
    return Counts(allowed=allowed, refused=refused, rate_limited=rate_limited)


async def _series(
    session: AsyncSession,
    table: Any,
    scope: ColumnElement[bool],
    granularity: Granularity,
    start: datetime,
    end: datetime,
) -> Series:
    rows = await session.execute(
        select(table.hour, *_sums(table))
        .where(scope, table.hour >= start, table.hour < end)
        .group_by(table.hour)
    )
    step = timedelta(hours=1) if granularity is Granularity.hour else timedelta(days=1)
    points: dict[datetime, list[int]] = {}
    moment = start
    while moment < end:
        points[moment] = [0, 0, 0]
        moment += step
    # Hours are summed into days here: the same on every backend, and at most 744 rows a key.
    for hour, *sums in rows.all():
        bucket = points[_floor(hour, granularity)]
        for i, n in enumerate(sums):
            bucket[i] += int(n)
    return Series(
        granularity=granularity,
        start=start,
        end=end,
        points=[
            Point(start=moment, **_counts_of(sums).model_dump()) for moment, sums in points.items()
        ],
    )


async def _top_endpoints(
    session: AsyncSession, table: Any, scope: ColumnElement[bool], start: datetime, end: datetime
) -> list[EndpointCounts]:
    total = func.sum(table.allowed + table.refused)
    rows = await session.execute(
        select(table.endpoint, *_sums(table))
        .where(scope, table.hour >= start, table.hour < end)
        .group_by(table.endpoint)
        .order_by(total.desc(), table.endpoint)
        .limit(TOP)
    )
    return [
        EndpointCounts(endpoint=endpoint, **_counts_of(sums).model_dump())
        for endpoint, *sums in rows.all()
    ]


async def key_usage(
    session: AsyncSession,
    key: ApiKey,
    *,
    granularity: Granularity,
    start: datetime | None,
    end: datetime | None,
) -> tuple[Counts, Counts, Series, list[EndpointCounts]]:
    start, end = window(granularity, start, end)
    scope = UsageCounter.key_id == key.id
    hour, month = await _counts(session, UsageCounter, scope, utcnow())
    series = await _series(session, UsageCounter, scope, granularity, start, end)
    return hour, month, series, await _top_endpoints(session, UsageCounter, scope, start, end)


async def account_usage(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    granularity: Granularity,
    start: datetime | None,
    end: datetime | None,
) -> tuple[Counts, Counts, Series, list[EndpointCounts], list[KeyCounts]]:
    start, end = window(granularity, start, end)
    # An account's counts come from its rollups (written with the counters): an account of
    # thousands of keys is a few thousand rows a month, not millions.
    scope = UsageAccountHour.account_id == account_id
    hour, month = await _counts(session, UsageAccountHour, scope, utcnow())
    series = await _series(session, UsageAccountHour, scope, granularity, start, end)
    endpoints = await _top_endpoints(session, UsageAccountHour, scope, start, end)
    return hour, month, series, endpoints, await _top_keys(session, account_id, start, end)


async def _top_keys(
    session: AsyncSession, account_id: uuid.UUID, start: datetime, end: datetime
) -> list[KeyCounts]:
    """The busiest keys over ``[start, end)``: from the daily rollup when the range is whole
    days, from the hourly counters otherwise (a day or two of them)."""
    table: Any = UsageCounter
    moment: Any = UsageCounter.hour
    if start == _floor(start, Granularity.day) and end == _floor(end, Granularity.day):
        table, moment = UsageKeyDay, UsageKeyDay.day
    total = func.sum(table.allowed + table.refused)
    busiest = (
        select(table.key_id, *_sums(table))
        .where(table.account_id == account_id, moment >= start, moment < end)
        .group_by(table.key_id)
        .order_by(total.desc(), table.key_id)
        .limit(TOP)
        .subquery()
    )
    rows = await session.execute(
        select(busiest.c.key_id, ApiKey.name, *list(busiest.c)[1:]).join(
            ApiKey, ApiKey.id == busiest.c.key_id
        )
    )
    keys = [
        KeyCounts(key_id=key_id, name=name, **_counts_of(sums).model_dump())
        for key_id, name, *sums in rows.all()
    ]
    keys.sort(key=lambda k: (-(k.allowed + k.refused), k.key_id.int))
    return keys


async def quota_remaining(
    session: AsyncSession, limiter: Limiter, key_id: uuid.UUID, limits: Limits
) -> int | None:
    """What the limiter would let the key spend: the shared bucket's count, less what this
    instance holds leased and unspent, as /verify's `quota_remaining` says it."""
    if limits.monthly_quota is None:
        return None
    used = await buckets.quota_used(session, key_id) - limiter.unspent(key_id, limits)
    return max(0, limits.monthly_quota - used)


async def key_limits(
    session: AsyncSession,
    settings: Settings,
    limiter: Limiter,
    key: ApiKey,
    application: Application | None,
) -> LimitsOut:
    """The limits in force for ``key`` (its own, its application's or the deployment's) and
    what is left of its monthly quota."""
    limits = effective_limits(settings, key, application)
    quota = limits.monthly_quota
    return LimitsOut(
        rate_limit=RateLimit(
            limit=limits.rate.limit,
            period_seconds=limits.rate.period_seconds,
            burst=limits.rate.burst,
        )
        if limits.rate
        else None,
        monthly_quota=quota,
        quota_remaining=await quota_remaining(session, limiter, key.id, limits),
        quota_resets_at=next_month_start(utcnow()) if quota is not None else None,
    )

"""Leasing tokens from a key's shared bucket: one atomic ``UPDATE ... RETURNING``.

Every quantity is computed inside the statement from the row's own columns and the database's
clock, so that concurrent updaters under READ COMMITTED (PostgreSQL re-evaluates the expressions
on the row version it locks) or serialised writers (SQLite) can never spend the same tokens twice,
and instances whose clocks disagree cannot refill it twice.

Exactness over any interval. An instance spends leased tokens after it leased them, so tokens
leased before an interval starts may be admitted within it. The bucket therefore counts tokens
leased (beyond the request that took them) in the current and the previous lease window against
its capacity, and instances drop a lease once it is a window old: at any instant the tokens in the
bucket plus the tokens held in live leases never exceed the burst, which bounds the requests
admitted in any interval [t1, t2] by ``burst + rate x (t2 - t1)``. A lease of an instance that
crashes is simply lost.
"""

from __future__ import annotations

import functools
import typing
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Table,
    Update,
    bindparam,
    case,
    cast,
    extract,
    func,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from keyservice.db import upsert
from keyservice.models import RateBucket

UNLIMITED = 2**62

_table = typing.cast(Table, RateBucket.__table__)
_c = _table.c


@dataclass(frozen=True, slots=True)
class LeaseResult:
    taken: int
    # The bucket as the statement left it, by the database's clock.
    tokens: float
    leased_previous: float
    leased_current: float
    window: int
    now_epoch: float
    quota_used: int


def _greatest(a: Any, b: Any) -> ColumnElement[Any]:
    return case((a > b, a), else_=b)


def _least(a: Any, b: Any) -> ColumnElement[Any]:
    return case((a < b, a), else_=b)


class _Clock:
    """The database's notion of now, and of the current UTC month, per backend."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"

    def now(self) -> ColumnElement[float]:
        if self.postgres:
            # Stable within the statement, unlike clock_timestamp().
            return cast(extract("epoch", func.statement_timestamp()), Float)
        # julianday('now') is stable within one sqlite3_step().
        return (func.julianday("now") - 2440587.5) * 86400.0

    def month(self) -> ColumnElement[int]:
        if self.postgres:
            utc = func.timezone("UTC", func.statement_timestamp())
            return cast(func.to_char(utc, "YYYYMM"), Integer)
        return cast(func.strftime("%Y%m", "now"), Integer)

    def floor(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        # PostgreSQL rounds when casting to an integer; SQLite truncates (floor, for positives).
        return cast(func.floor(value), BigInteger) if self.postgres else cast(value, BigInteger)


def _param(name: str, type_: Any) -> BindParameter[Any]:
    return bindparam(name, type_=type_)


@functools.cache
def _lease_statement(dialect: str) -> Update:
    """The lease statement, built once per backend with bound parameters: building it costs
    more than running it, and a fixed statement stays in SQLAlchemy's compiled cache."""
    clock = _Clock(dialect)
    now = clock.now()
    month = clock.month()
    cost = _param("cost", BigInteger)
    want = _param("want", BigInteger)
    burst = _param("burst", Float)
    rate = _param("rate", Float)
    window_ms = _param("window_length_ms", BigInteger)
    quota = _param("quota", BigInteger)
    returned = _param("returned", BigInteger)

    window = clock.floor(now * 1000.0 / window_ms)
    # A changed policy (another window length) keeps both windows' leases: cautious, and brief.
    keep = (_c.window_ms != window_ms) | (window <= _c.window)
    previous = case(
        (keep, _c.leased_previous), (window == _c.window + 1, _c.leased_current), else_=0.0
    )
    current = case((keep, _c.leased_current), else_=0.0)
    capacity = burst - previous - current
    elapsed = _greatest(now - _c.refilled_epoch, 0.0)
    # Never below zero: a tightened policy must not leave the bucket in debt.
    available = _greatest(_least(capacity, _c.tokens + elapsed * rate), 0.0)
    same_month = _c.quota_month == month
    used = case((same_month, _greatest(_c.quota_used - returned, 0)), else_=0)
    quota_left = quota - used
    # Near the end of a quota, leases shrink, so that a lease lost with its instance wastes
    # little of it. Integer division: quota is counted in whole requests.
    quota_share = _greatest(cost, quota_left // 10)
    take = case(
        (
            (available >= cost) & (quota_left >= cost),
            _least(_least(want, clock.floor(available)), quota_share),
        ),
        else_=0,
    )
    return (
        update(_table)
        .where(_c.key_id == bindparam("bucket_key_id", type_=_c.key_id.type))
        .values(
            tokens=available - take,
            refilled_epoch=_greatest(now, _c.refilled_epoch),
            # Never backwards: a statement whose clock reads earlier must not age the leases.
            window=case((_c.window_ms == window_ms, _greatest(window, _c.window)), else_=window),
            window_ms=window_ms,
            leased_previous=previous,
            # What the lease keeps beyond the request that took it may be spent later.
            leased_current=current + case((take > 0, take - cost), else_=0),
            last_take=take,
            quota_month=month,
            quota_used=used + take,
        )
        .returning(
            _c.last_take,
            _c.tokens,
            _c.leased_previous,
            _c.leased_current,
            _c.window,
            _c.refilled_epoch,
            _c.quota_used,
        )
    )


async def lease(
    session: AsyncSession,
    *,
    key_id: uuid.UUID,
    cost: int,
    want: int,
    burst: float,
    rate: float,
    window_ms: int,
    quota: int | None,
    returned: int = 0,
) -> LeaseResult:
    """Take ``want`` tokens (at least ``cost``, else none) from the key's bucket and quota.

    ``returned`` is what the caller's previous lease of this key left unspent: its quota comes
    back (its rate tokens do not; they only stop counting once their lease has expired)."""
    dialect = session.get_bind().dialect.name
    statement = _lease_statement(dialect)
    params = {
        "bucket_key_id": key_id,
        "cost": cost,
        "want": want,
        "burst": burst,
        "rate": rate,
        "window_length_ms": window_ms,
        "quota": quota if quota is not None else UNLIMITED,
        "returned": returned,
    }
    row = (await session.execute(statement, params)).first()
    if row is None:
        # First use of this key: a full bucket. Concurrent first uses insert once.
        clock = _Clock(dialect)
        now, month = clock.now(), clock.month()
        await session.execute(
            upsert(session, _table)
            .values(
                key_id=key_id,
                tokens=burst,
                refilled_epoch=now,
                window=0,
                window_ms=window_ms,
                leased_previous=0.0,
                leased_current=0.0,
                last_take=0.0,
                quota_month=month,
                quota_used=0,
            )
            .on_conflict_do_nothing(index_elements=[_c.key_id])
        )
        row = (await session.execute(statement, params)).one()
    return LeaseResult(
        taken=int(row.last_take),
        tokens=float(row.tokens),
        leased_previous=float(row.leased_previous),
        leased_current=float(row.leased_current),
        window=int(row.window),
        now_epoch=float(row.refilled_epoch),
        quota_used=int(row.quota_used),
    )

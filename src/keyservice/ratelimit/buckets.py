"""Leasing tokens from keys' shared buckets: one atomic ``UPDATE ... RETURNING`` for many keys.

Every quantity is computed inside the statement from the row's own columns and the database's
clock, on rows the statement has locked (PostgreSQL: ``FOR UPDATE``, in key order, so that two
instances leasing overlapping keys cannot deadlock; SQLite: one writer at a time), so that
concurrent instances can never spend the same tokens twice, and instances whose clocks disagree
cannot refill a bucket twice. The keys and what is asked of each travel as one JSON parameter:
the statement is the same whatever the batch, and stays compiled and prepared.

Exactness over any interval. An instance spends leased tokens after it leased them, so tokens
leased before an interval starts may be admitted within it. The bucket therefore counts tokens
leased (beyond the request that took them) in the current and the previous lease window against
its capacity, and instances drop a lease once it is a window old: at any instant the tokens in the
bucket plus the tokens held in live leases never exceed the burst, which bounds the requests
admitted in any interval [t1, t2] by ``burst + rate x (t2 - t1)``. Short leases (a fraction of a
second, for keys in steady use) and long ones (for keys an instance sees now and then) are counted
in windows of their own lengths. A lease of an instance that crashes is simply lost.
"""

from __future__ import annotations

import functools
import typing
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Float,
    FromClause,
    Insert,
    Integer,
    Table,
    Update,
    Uuid,
    case,
    cast,
    extract,
    func,
    literal,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.db import dialect_upsert
from keyservice.json_rows import JsonRows
from keyservice.models import ApiKey, RateBucket

UNLIMITED = 2**62
# A batch is one statement; larger ones wait for the next.
MAX_BATCH = 500

_table = typing.cast(Table, RateBucket.__table__)
_c = _table.c


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """Take ``want`` tokens (at least ``cost``, else none) from the key's bucket and quota.

    ``window_ms`` is the key's short lease window, ``long_window_ms`` the long one; ``long`` says
    which this lease lives for and is counted in. ``returned`` is what the caller's previous lease
    of this key left unspent: its quota comes back (its rate tokens do not; they only stop
    counting once their lease has expired). ``create``: the key may have no bucket yet."""

    key_id: uuid.UUID
    cost: int
    want: int
    burst: float
    rate: float
    window_ms: int
    long_window_ms: int
    long: bool
    quota: int | None
    returned: int = 0
    create: bool = False

    def row(self) -> tuple[Any, ...]:
        """The request as a row of ``_REQUEST_COLUMNS``."""
        return (
            self.key_id,
            self.cost,
            self.want,
            float(self.burst),
            float(self.rate),
            self.window_ms,
            self.long_window_ms,
            int(self.long),
            self.quota if self.quota is not None else UNLIMITED,
            self.returned,
        )


@dataclass(frozen=True, slots=True)
class LeaseResult:
    taken: int
    # The bucket as the statement left it, by the database's clock.
    tokens: float
    leased_previous: float
    leased_current: float
    window: int
    long_leased_previous: float
    long_leased_current: float
    long_window: int
    now_epoch: float
    quota_used: int


_REQUEST_COLUMNS: dict[str, Any] = {
    "key_id": Uuid,
    "cost": BigInteger,
    "want": BigInteger,
    "burst": Float,
    "rate": Float,
    "short_ms": BigInteger,
    "long_ms": BigInteger,
    "is_long": Integer,
    "quota": BigInteger,
    "returned": BigInteger,
}


def _greatest(a: Any, b: Any) -> ColumnElement[Any]:
    return case((a > b, a), else_=b)


def _least(a: Any, b: Any) -> ColumnElement[Any]:
    return case((a < b, a), else_=b)


class _Dialect:
    """The database's notion of now and of the current UTC month, and the batch as rows."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.postgres = name == "postgresql"

    def now(self) -> ColumnElement[float]:
        if self.postgres:
            # Stable within the statement, unlike clock_timestamp().
            return cast(extract("epoch", func.statement_timestamp()), Float)
        # julianday('now') is stable within one sqlite3_step(), and a statement with RETURNING
        # makes all its changes in the first.
        return (func.julianday("now") - 2440587.5) * 86400.0

    def month(self) -> ColumnElement[int]:
        if self.postgres:
            utc = func.timezone("UTC", func.statement_timestamp())
            return cast(func.to_char(utc, "YYYYMM"), Integer)
        return cast(func.strftime("%Y%m", "now"), Integer)

    def floor(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        # PostgreSQL rounds when casting to an integer; SQLite truncates (floor, for positives).
        return cast(func.floor(value), BigInteger) if self.postgres else cast(value, BigInteger)

    def requests(self) -> FromClause:
        """The ``batch`` parameter, ``LeaseRequest.row()`` for each request, as rows."""
        return _requests(self.name).table()


def _requests(dialect: str) -> JsonRows:
    return JsonRows(dialect, _REQUEST_COLUMNS, name="request", param="batch")


def _rolled(dialect: _Dialect, request: FromClause) -> CTE:
    """Each requested bucket, locked, with its lease windows rolled forward to now."""
    now = dialect.now()
    locked = (
        select(
            *(c for c in _table.c),
            *(request.c[name] for name in _REQUEST_COLUMNS if name != "key_id"),
            now.label("now"),
            dialect.month().label("month"),
        )
        .join_from(_table, request, _c.key_id == request.c.key_id)
        .order_by(_c.key_id)
        .with_for_update(of=_table)
        .cte("locked")
    )
    b = locked.c

    def roll(
        window_ms: Any, length: Any, last: Any, previous: Any, current: Any
    ) -> tuple[ColumnElement[Any], ...]:
        window = dialect.floor(b.now * 1000.0 / length)
        # A changed window length keeps both windows' leases: cautious, and brief.
        keep = (window_ms != length) | (window <= last)
        rolled_previous = case((keep, previous), (window == last + 1, current), else_=literal(0.0))
        rolled_current = case((keep, current), else_=literal(0.0))
        # Never backwards: a statement whose clock reads earlier must not age the leases.
        new_window = case((window_ms == length, _greatest(window, last)), else_=window)
        return rolled_previous, rolled_current, new_window

    previous, current, window = roll(
        b.window_ms, b.short_ms, b.window, b.leased_previous, b.leased_current
    )
    long_previous, long_current, long_window = roll(
        b.long_window_ms, b.long_ms, b.long_window, b.long_leased_previous, b.long_leased_current
    )
    used = case(
        (b.quota_month == b.month, _greatest(b.quota_used - b.returned, 0)), else_=literal(0)
    )
    return select(
        b.key_id,
        *(b[name] for name in ("now", "month", "cost", "want", "burst", "rate", "quota")),
        *(b[name] for name in ("short_ms", "long_ms", "is_long", "tokens", "refilled_epoch")),
        previous.label("previous"),
        current.label("current"),
        window.label("new_window"),
        long_previous.label("long_previous"),
        long_current.label("long_current"),
        long_window.label("new_long_window"),
        type_coerce(used, BigInteger).label("used"),
    ).cte("rolled")


@functools.cache
def _lease_statement(name: str) -> Update:
    """The lease statement, built once per backend: building it costs more than running it."""
    dialect = _Dialect(name)
    r = _rolled(dialect, dialect.requests()).c
    capacity = r.burst - r.previous - r.current - r.long_previous - r.long_current
    elapsed = _greatest(r.now - r.refilled_epoch, 0.0)
    # Never below zero: a tightened policy must not leave the bucket in debt.
    available = _greatest(_least(capacity, r.tokens + elapsed * r.rate), 0.0)
    sized = select(*r, available.label("available"), (r.quota - r.used).label("quota_left")).cte(
        "sized"
    )
    s = sized.c
    # Near the end of a quota, leases shrink, so that a lease lost with its instance wastes
    # little of it. Integer division: quota is counted in whole requests.
    quota_share = _greatest(s.cost, s.quota_left // 10)
    take = case(
        (
            (s.available >= s.cost) & (s.quota_left >= s.cost),
            _least(_least(s.want, dialect.floor(s.available)), quota_share),
        ),
        else_=0,
    )
    taken = select(*s, type_coerce(take, BigInteger).label("take")).cte("taken")
    t = taken.c
    # What a lease keeps beyond the request that took it may be spent later.
    kept = case((t.take > 0, t.take - t.cost), else_=0)
    return (
        update(_table)
        .where(_c.key_id == t.key_id)
        .values(
            tokens=t.available - t.take,
            refilled_epoch=_greatest(t.now, t.refilled_epoch),
            window=t.new_window,
            window_ms=t.short_ms,
            leased_previous=t.previous,
            leased_current=t.current + case((t.is_long == 0, kept), else_=0),
            long_window=t.new_long_window,
            long_window_ms=t.long_ms,
            long_leased_previous=t.long_previous,
            long_leased_current=t.long_current + case((t.is_long == 1, kept), else_=0),
            last_take=t.take,
            quota_month=t.month,
            quota_used=t.used + t.take,
        )
        .returning(
            _c.key_id,
            _c.last_take,
            _c.tokens,
            _c.leased_previous,
            _c.leased_current,
            _c.window,
            _c.long_leased_previous,
            _c.long_leased_current,
            _c.long_window,
            _c.refilled_epoch,
            _c.quota_used,
        )
    )


@functools.cache
def _create_statement(name: str) -> Insert:
    """Full buckets for the requested keys that have none yet (and still exist), in key order."""
    dialect = _Dialect(name)
    request = dialect.requests()
    full = {
        "key_id": request.c.key_id,
        "tokens": request.c.burst,
        "refilled_epoch": dialect.now(),
        "window": literal(0),
        "window_ms": request.c.short_ms,
        "leased_previous": literal(0.0),
        "leased_current": literal(0.0),
        "long_window": literal(0),
        "long_window_ms": request.c.long_ms,
        "long_leased_previous": literal(0.0),
        "long_leased_current": literal(0.0),
        "last_take": literal(0.0),
        "quota_month": dialect.month(),
        "quota_used": literal(0),
    }
    rows = (
        select(*full.values())
        .where(request.c.key_id.in_(select(ApiKey.id)))
        # SQLite needs a WHERE here to read ON CONFLICT as the upsert's.
        .where(true())
        .order_by(request.c.key_id)
    )
    statement = dialect_upsert(name, _table).from_select(list(full), rows)
    return typing.cast(Insert, statement.on_conflict_do_nothing(index_elements=[_c.key_id]))


async def _run(
    session: AsyncSession, name: str, requests: Sequence[LeaseRequest]
) -> dict[uuid.UUID, LeaseResult]:
    batch = _requests(name).bind(request.row() for request in requests)
    rows = await session.execute(_lease_statement(name), batch)
    return {
        row.key_id: LeaseResult(
            taken=int(row.last_take),
            tokens=float(row.tokens),
            leased_previous=float(row.leased_previous),
            leased_current=float(row.leased_current),
            window=int(row.window),
            long_leased_previous=float(row.long_leased_previous),
            long_leased_current=float(row.long_leased_current),
            long_window=int(row.long_window),
            now_epoch=float(row.refilled_epoch),
            quota_used=int(row.quota_used),
        )
        for row in rows
    }


async def lease(
    session: AsyncSession, requests: Sequence[LeaseRequest]
) -> dict[uuid.UUID, LeaseResult]:
    """Lease for every request (one per key) in one transaction, and commit it.

    Keys flagged ``create`` (the caller has not seen them yet) get a full bucket first if they
    have none. Buckets are created in key order, and locked in key order, so that instances
    leasing overlapping keys at once wait for each other but cannot deadlock. A bucket the
    statement could not see (created meanwhile by another instance, or never) is leased in a
    second transaction; a key deleted meanwhile gets no result."""
    name = session.get_bind().dialect.name
    rows = _requests(name)
    new = [request for request in requests if request.create]
    if new:
        await session.execute(_create_statement(name), rows.bind(r.row() for r in new))
    results = await _run(session, name, requests)
    await session.commit()
    missing = [request for request in requests if request.key_id not in results]
    if missing:
        await session.execute(_create_statement(name), rows.bind(r.row() for r in missing))
        results |= await _run(session, name, missing)
        await session.commit()
    return results


async def quota_used(session: AsyncSession, key_id: uuid.UUID) -> int:
    """The key's quota used this month (UTC, by the database's clock), as the limiter counts
    it: tokens spent and tokens leased to instances, not yet spent, that count against it until
    they are given back with the next lease. The one figure that /verify's `quota_remaining` and
    the usage page both report."""
    dialect = _Dialect(session.get_bind().dialect.name)
    used = await session.scalar(
        select(case((_c.quota_month == dialect.month(), _c.quota_used), else_=literal(0))).where(
            _c.key_id == key_id
        )
    )
    return int(used or 0)

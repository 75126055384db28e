"""usage rollups: an account's counts per endpoint and hour, and a key's per day, written with the
counters, so that an account's usage page sums a few thousand rows rather than every key's hours

Revision ID: 6c1d2e3f4a5b
Revises: b626934c5db8
Create Date: 2026-12-05 03:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6c1d2e3f4a5b"
down_revision: str | None = "b626934c5db8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = ("allowed", "refused", "rate_limited")


def upgrade() -> None:
    op.create_table(
        "usage_account_hours",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("endpoint", sa.String(length=200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _COUNTS),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_usage_account_hours_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "hour", "endpoint", name=op.f("pk_usage_account_hours")
        ),
    )
    op.create_table(
        "usage_key_days",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _COUNTS),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_usage_key_days_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_usage_key_days_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "day", name=op.f("pk_usage_key_days")),
    )
    with op.batch_alter_table("usage_key_days", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_key_days_account_id"), ["account_id", "day"], unique=False
        )
    _backfill()


def _backfill() -> None:
    """The rollups of the counters written so far: in SQL for the hours, in Python for the days
    (truncating a time to its day has no portable SQL)."""
    bind = op.get_bind()
    counters = sa.table(
        "usage_counters",
        sa.column("key_id", sa.Uuid()),
        sa.column("account_id", sa.Uuid()),
        sa.column("endpoint", sa.String()),
        sa.column("hour", sa.DateTime(timezone=True)),
        *(sa.column(name, sa.BigInteger()) for name in _COUNTS),
    )
    hours = sa.table(
        "usage_account_hours",
        sa.column("account_id", sa.Uuid()),
        sa.column("hour", sa.DateTime(timezone=True)),
        sa.column("endpoint", sa.String()),
        *(sa.column(name, sa.BigInteger()) for name in _COUNTS),
    )
    days = sa.table(
        "usage_key_days",
        sa.column("key_id", sa.Uuid()),
        sa.column("day", sa.DateTime(timezone=True)),
        sa.column("account_id", sa.Uuid()),
        *(sa.column(name, sa.BigInteger()) for name in _COUNTS),
    )
    sums = [sa.func.sum(getattr(counters.c, name)) for name in _COUNTS]
    bind.execute(
        hours.insert().from_select(
            ["account_id", "hour", "endpoint", *_COUNTS],
            sa.select(counters.c.account_id, counters.c.hour, counters.c.endpoint, *sums).group_by(
                counters.c.account_id, counters.c.hour, counters.c.endpoint
            ),
        )
    )
    by_day: dict[tuple[object, object, object], list[int]] = {}
    rows = bind.execute(
        sa.select(counters.c.key_id, counters.c.account_id, counters.c.hour, *sums).group_by(
            counters.c.key_id, counters.c.account_id, counters.c.hour
        )
    )
    for key_id, account_id, hour, *counted in rows:
        day = hour.replace(hour=0, minute=0, second=0, microsecond=0)
        total = by_day.setdefault((key_id, day, account_id), [0, 0, 0])
        for i, n in enumerate(counted):
            total[i] += int(n or 0)
    rows_out = [
        {"key_id": k, "day": d, "account_id": a, **dict(zip(_COUNTS, c, strict=True))}
        for (k, d, a), c in by_day.items()
    ]
    for start in range(0, len(rows_out), 10_000):
        bind.execute(days.insert(), rows_out[start : start + 10_000])


def downgrade() -> None:
    with op.batch_alter_table("usage_key_days", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_key_days_account_id"))
    op.drop_table("usage_key_days")
    op.drop_table("usage_account_hours")

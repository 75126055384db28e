"""rate limits, usage counters and events: limit overrides on applications and keys, the
shared token buckets, hourly usage counters and the events outbox

Revision ID: c4e6413d77f5
Revises: 2ce8c351a306
Create Date: 2026-11-21 06:04:47.815661+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "c4e6413d77f5"
down_revision: str | None = "2ce8c351a306"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_events_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_events_dedupe_key")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_account_id"), ["account_id", "created_at"], unique=False
        )

    op.create_table(
        "rate_buckets",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_epoch", sa.Float(), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("window_ms", sa.Integer(), nullable=False),
        sa.Column("leased_previous", sa.Float(), nullable=False),
        sa.Column("leased_current", sa.Float(), nullable=False),
        sa.Column("last_take", sa.Float(), nullable=False),
        sa.Column("quota_month", sa.Integer(), nullable=False),
        sa.Column("quota_used", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_rate_buckets_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "usage_counters",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint", sa.String(length=200), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("allowed", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
        sa.Column("rate_limited", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_usage_counters_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name=op.f("fk_usage_counters_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "endpoint", "hour", name=op.f("pk_usage_counters")),
    )
    with op.batch_alter_table("usage_counters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_usage_counters_account_id"), ["account_id", "hour"], unique=False
        )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_period_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("monthly_quota", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_period_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rate_burst", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("monthly_quota", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("applications", schema=None) as batch_op:
        batch_op.drop_column("monthly_quota")
        batch_op.drop_column("rate_burst")
        batch_op.drop_column("rate_period_seconds")
        batch_op.drop_column("rate_limit")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("monthly_quota")
        batch_op.drop_column("rate_burst")
        batch_op.drop_column("rate_period_seconds")
        batch_op.drop_column("rate_limit")

    with op.batch_alter_table("usage_counters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_counters_account_id"))

    op.drop_table("usage_counters")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_account_id"))

    op.drop_table("events")

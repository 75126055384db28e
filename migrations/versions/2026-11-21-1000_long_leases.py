"""long leases: rate buckets account for the long leases of rarely used keys apart

Revision ID: 5b1f0e7c2d9a
Revises: c4e6413d77f5
Create Date: 2026-11-21 10:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b1f0e7c2d9a"
down_revision: str | None = "c4e6413d77f5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rate_buckets") as batch:
        batch.add_column(
            sa.Column("long_window", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("long_window_ms", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("long_leased_previous", sa.Float(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("long_leased_current", sa.Float(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("rate_buckets") as batch:
        batch.drop_column("long_leased_current")
        batch.drop_column("long_leased_previous")
        batch.drop_column("long_window_ms")
        batch.drop_column("long_window")

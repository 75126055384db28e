"""alert thresholds and admin emails: usage alert thresholds per account and per key, and an
account's choice to email its alerts to its owners and admins too

Revision ID: b626934c5db8
Revises: 4541749f8c9a
Create Date: 2026-12-05 03:25:59.021899+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b626934c5db8"
down_revision: str | None = "4541749f8c9a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("alert_quota_percents", JSON, nullable=True))
        batch.add_column(sa.Column("alert_rate_limited_refusals", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "alert_emails_to_admins", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("alert_quota_percents", JSON, nullable=True))
        batch.add_column(sa.Column("alert_rate_limited_refusals", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("alert_rate_limited_refusals")
        batch.drop_column("alert_quota_percents")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("alert_emails_to_admins")
        batch.drop_column("alert_rate_limited_refusals")
        batch.drop_column("alert_quota_percents")

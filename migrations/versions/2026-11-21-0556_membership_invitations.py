"""membership invitations: existing users join another account by accepting a token

Revision ID: 2ce8c351a306
Revises: 2ea2dcc8cc37
Create Date: 2026-11-21 05:56:46.161283+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2ce8c351a306"
down_revision: str | None = "2ea2dcc8cc37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invitation_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_memberships_invitation_hash"), ["invitation_hash"]
        )
    # Every membership so far was made directly: it counts as accepted when it was made.
    op.execute("UPDATE memberships SET accepted_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_memberships_invitation_hash"), type_="unique")
        batch_op.drop_column("accepted_at")
        batch_op.drop_column("invitation_hash")

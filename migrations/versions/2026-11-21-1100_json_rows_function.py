"""json rows function: many rows as one JSON parameter, estimated as few rows by the planner

Revision ID: 8d3a6c1f4e72
Revises: 5b1f0e7c2d9a
Create Date: 2026-11-21 11:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "8d3a6c1f4e72"
down_revision: str | None = "5b1f0e7c2d9a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# json_array_elements is estimated at 100 rows, whatever the array: against a table of a few
# thousand rows, joining 100 rows costs less as a hash join over the whole table than as as many
# index lookups, so PostgreSQL scanned every rate bucket (or key) for a batch of a dozen. This
# function returns the same rows, estimated at 10 (ROWS 10; plpgsql, so that it is not inlined
# into json_array_elements and the estimate holds): a batch is looked up through the indexes,
# whatever the size of the table.
FUNCTION = """
CREATE FUNCTION keyservice_json_rows(rows json) RETURNS TABLE (value json)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE ROWS 10 AS $$
BEGIN
    RETURN QUERY SELECT json_array_elements(rows);
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION keyservice_json_rows(json)")

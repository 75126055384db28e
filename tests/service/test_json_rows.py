"""Many rows as one JSON parameter (``keyservice.db.JsonRows``): what goes in comes back, on both
backends, whatever the values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import BigInteger, Float, String, Uuid, select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.json_rows import JsonRows
from keyservice.models.base import UTCDateTime

COLUMNS = {
    "id": Uuid,
    "name": String,
    "at": UTCDateTime,
    "count": BigInteger,
    "share": Float,
}


async def test_rows_come_back_as_they_were_sent(session: AsyncSession) -> None:
    dialect = session.get_bind().dialect.name
    rows = JsonRows(dialect, COLUMNS, name="sent", param="rows")
    at = datetime(2026, 11, 21, 9, 30, 0, 123456, tzinfo=UTC)
    elsewhere = timezone(timedelta(hours=-5))
    sent = [
        (uuid.uuid4(), 'GET /v1/contacts "quoted" \\ é 😀', at, 2**62, 0.25),
        # The same instant in another zone comes back in UTC, and equal to the first.
        (uuid.uuid4(), "", at.astimezone(elsewhere), -1, 1e-9),
        (uuid.uuid4(), None, None, None, None),
    ]
    table = rows.table()
    result = await session.execute(select(*table.c), rows.bind(sent))
    received = {row.id: tuple(row) for row in result}
    assert received == {
        sent[0][0]: sent[0],
        sent[1][0]: (sent[1][0], "", at, -1, 1e-9),
        sent[2][0]: sent[2],
    }


async def test_no_rows_is_an_empty_table(session: AsyncSession) -> None:
    rows = JsonRows(session.get_bind().dialect.name, COLUMNS, name="sent", param="rows")
    result = await session.execute(select(*rows.table().c), rows.bind([]))
    assert result.all() == []

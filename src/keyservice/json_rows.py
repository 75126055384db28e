"""Many rows as one parameter of a fixed statement (``JsonRows``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    FromClause,
    String,
    TypeDecorator,
    Uuid,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql


class JsonRows:
    """Many rows as one JSON parameter, read back as a table in SQL: one fixed statement, compiled
    and prepared once, takes any number of rows (PostgreSQL ``keyservice_json_rows``, our
    ``json_array_elements`` estimated at a few rows so that batches go through the indexes;
    SQLite ``json_each``).

    Rows are tuples in the columns' order, sent as JSON arrays; values are stored as each backend
    stores them: UUIDs as hex, times in UTC. A time is encoded once per call however many rows
    share it (a flush's rows share their hour). JSON rather than PostgreSQL arrays: ``unnest``
    estimates its rows from the arrays' length, which makes PostgreSQL plan such statements anew
    on every execution, each plan costing more than running the statement."""

    def __init__(self, dialect: str, columns: Mapping[str, Any], *, name: str, param: str) -> None:
        self.postgres = dialect == "postgresql"
        self.columns = dict(columns)
        self.name = name
        self.param = param
        types = [type_() if isinstance(type_, type) else type_ for type_ in self.columns.values()]
        self._uuids = [i for i, type_ in enumerate(types) if isinstance(_impl(type_), Uuid)]
        self._times = [i for i, type_ in enumerate(types) if isinstance(_impl(type_), DateTime)]

    def table(self) -> FromClause:
        rows = bindparam(self.param, type_=String)
        values: list[ColumnElement[Any]]
        if self.postgres:
            # json_array_elements, estimated at a few rows (see the migration that creates it).
            elements = func.keyservice_json_rows(cast(rows, postgresql.JSON))
            row = elements.table_valued("value").alias(f"{self.name}_row")
            values = [
                cast(row.c.value.op("->>")(literal_column(str(i))), t)
                for i, t in enumerate(self.columns.values())
            ]
        else:
            row = func.json_each(rows).table_valued("value").alias(f"{self.name}_row")
            values = [
                type_coerce(func.json_extract(row.c.value, f"$[{i}]"), t)
                for i, t in enumerate(self.columns.values())
            ]
        return select(
            *(value.label(name) for value, name in zip(values, self.columns, strict=True))
        ).subquery(self.name)

    def bind(self, rows: Iterable[Sequence[Any]]) -> dict[str, str]:
        """The statement's parameter for ``rows``."""
        times: dict[datetime, str] = {}
        encoded = []
        for row in rows:
            values = list(row)
            for i in self._uuids:
                if values[i] is not None:
                    values[i] = values[i].hex
            for i in self._times:
                at = values[i]
                if at is not None:
                    if at not in times:
                        times[at] = self._time(at)
                    values[i] = times[at]
            encoded.append(values)
        return {self.param: json.dumps(encoded)}

    def _time(self, value: datetime) -> str:
        value = value.astimezone(UTC)
        if self.postgres:
            return value.isoformat()
        # As SQLAlchemy's SQLite DATETIME stores it, so that equal times compare equal.
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _impl(type_: Any) -> Any:
    """The type a decorated type stores as."""
    return type_.impl_instance if isinstance(type_, TypeDecorator) else type_

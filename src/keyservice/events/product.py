"""The product's own event types: declared by the deployment, published by its backend.

``KEYSERVICE_EVENT_TYPES`` lists them (``contact.created,deal.won,automation.triggered`` by
default), each optionally ``=`` the path of a JSON Schema file that its events' ``data`` must
match (``contact.created=/etc/keyservice/contact.schema.json``). The product's backend publishes
them with ``POST /v1/events``; webhooks deliver them like keyservice's own.

Schemas are checked with the ``jsonschema`` package: the reference implementation of every
JSON Schema draft, whose errors say where in the document the data went wrong, so that a 422
can name the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators
from fastapi import Depends, Request

from keyservice.config import SettingsError
from keyservice.errors import InvalidEventData

DESCRIPTION = "Published by the product's backend (`POST /v1/events`)."
ANY_OBJECT: dict[str, Any] = {"type": "object"}
MAX_ERROR_LENGTH = 300


class CatalogueError(SettingsError):
    """``KEYSERVICE_EVENT_TYPES`` names a schema that cannot be used; the message says which."""


@dataclass(frozen=True)
class ProductEventType:
    name: str
    schema: dict[str, Any] | None
    validator: Any = None

    @property
    def data_schema(self) -> dict[str, Any]:
        return self.schema if self.schema is not None else ANY_OBJECT

    @property
    def example(self) -> dict[str, Any]:
        examples = (self.schema or {}).get("examples") or [{}]
        example: dict[str, Any] = examples[0] if isinstance(examples[0], dict) else {}
        return example

    def check(self, data: dict[str, Any]) -> None:
        """``InvalidEventData`` naming the first field of ``data`` that its schema refuses."""
        if self.validator is None:
            return
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(data))
        if error is None:
            return
        field = ".".join(["data", *(str(part) for part in error.absolute_path)])
        message = error.message[:MAX_ERROR_LENGTH]
        raise InvalidEventData(f"{field}: {message}", field=field)


def _load(name: str, path: str) -> ProductEventType:
    try:
        schema = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CatalogueError(
            f"KEYSERVICE_EVENT_TYPES: the schema of {name!r} ({path}) cannot be read as JSON: "
            f"{type(exc).__name__}"
        ) from None
    if not isinstance(schema, dict):
        raise CatalogueError(f"KEYSERVICE_EVENT_TYPES: the schema of {name!r} is not an object")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise CatalogueError(
            f"KEYSERVICE_EVENT_TYPES: the schema of {name!r} is not a valid JSON Schema: "
            f"{exc.message[:MAX_ERROR_LENGTH]}"
        ) from None
    return ProductEventType(name=name, schema=schema, validator=cls(schema))


@dataclass(frozen=True)
class ProductCatalogue:
    types: tuple[ProductEventType, ...] = ()

    @classmethod
    def load(cls, entries: Iterable[str]) -> ProductCatalogue:
        types = []
        for entry in entries:
            name, _, path = entry.partition("=")
            types.append(_load(name, path) if path else ProductEventType(name=name, schema=None))
        return cls(tuple(types))

    def get(self, name: str) -> ProductEventType | None:
        return next((t for t in self.types if t.name == name), None)

    def names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.types)


async def _product_catalogue(request: Request) -> ProductCatalogue:
    catalogue: ProductCatalogue = request.app.state.product_events
    return catalogue


ProductCatalogueDep = Annotated[ProductCatalogue, Depends(_product_catalogue)]

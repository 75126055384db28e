from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from keyservice.events.catalogue import BY_TYPE, EventType
from keyservice.events.product import DESCRIPTION, ProductEventType

_THRESHOLD = BY_TYPE["usage.threshold"].example


class EventOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "8f1e2d3c-4b5a-4697-8e7f-6a5b4c3d2e1f",
                    "type": "usage.threshold",
                    "key_id": _THRESHOLD["key_id"],
                    "data": _THRESHOLD,
                    "created_at": "2026-11-21T09:30:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    type: str
    key_id: uuid.UUID | None = Field(
        description="The key the event is about, if any (`key_id` filters on it)."
    )
    data: dict[str, Any] = Field(
        description="The payload: its type's, as `GET /v1/event-types` documents it."
    )
    created_at: datetime


_REVOKED = BY_TYPE["key.revoked"]


class EventTypeOut(BaseModel):
    type: str
    description: str
    scope: str = Field(
        description="The scope a key needs, besides `keyservice:usage:read`, to see events of "
        "this type in `GET /v1/events`."
    )
    data_schema: dict[str, Any] = Field(description="The JSON Schema of its events' `data`.")
    data_example: dict[str, Any] = Field(description="An example of its events' `data`.")

    @classmethod
    def of_product(cls, event_type: ProductEventType) -> EventTypeOut:
        return cls(
            type=event_type.name,
            description=DESCRIPTION,
            scope="keyservice:usage:read",
            data_schema=event_type.data_schema,
            data_example=event_type.example,
        )

    @classmethod
    def of(cls, event_type: EventType) -> EventTypeOut:
        return cls(
            type=event_type.name,
            description=event_type.description,
            scope=event_type.scope,
            data_schema=event_type.model.model_json_schema(),
            data_example=event_type.example,
        )


class EventTypes(BaseModel):
    """The catalogue of event types."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"data": [EventTypeOut.of(_REVOKED).model_dump()]}]}
    )

    data: list[EventTypeOut]


class EventPublish(BaseModel):
    """A product event, published by the product's backend."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "type": "contact.created",
                    "data": {"contact_id": "c_8812", "email": "ada@example.com"},
                    "idempotency_key": "contact-c_8812-created",
                }
            ]
        },
    )

    type: Annotated[
        str,
        StringConstraints(
            min_length=3, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
        ),
    ] = Field(description="One of the product's event types (`GET /v1/event-types`).")
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The event's payload: at most 16 KB of JSON by default, matching its "
        "type's schema when the deployment declares one.",
    )
    idempotency_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
        | None
    ) = Field(
        default=None,
        description="Publishing again with the same key returns the first event, and delivers "
        "nothing more.",
    )

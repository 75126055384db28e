from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from keyservice.fields import Description
from keyservice.models import WebhookEndpoint
from keyservice.webhooks.ssrf import MAX_URL_LENGTH

WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=MAX_URL_LENGTH, pattern=r"^https?://[^\x00-\x20\x7f]+$"),
    Field(
        description="Where events are POSTed. In production: https, and a host that resolves "
        "to public addresses only."
    ),
]
EventTypeName = Annotated[
    str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
]
EventTypeList = Annotated[
    list[EventTypeName],
    Field(
        max_length=100,
        description="The event types delivered (see `GET /v1/event-types`); empty: all of them.",
    ),
]
GracePeriod = Annotated[
    int,
    Field(
        ge=0,
        le=7 * 24 * 3600,
        description="How long the previous secret keeps signing beside the new one, in seconds "
        "(at most 7 days); omitted: the deployment's default (24 hours).",
    ),
]

_EXAMPLE: JsonDict = {
    "url": "https://hooks.partner.example/keyservice",
    "description": "Partner sync",
    "event_types": ["key.created", "key.revoked"],
}
_OUT: JsonDict = {
    "id": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
    **_EXAMPLE,
    "enabled": True,
    "disabled_reason": None,
    "disabled_at": None,
    "secret_rotated_at": None,
    "previous_secret_expires_at": None,
    "created_at": "2026-11-21T09:30:00Z",
    "updated_at": "2026-11-21T09:30:00Z",
}
SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    url: WebhookUrl
    description: Description = ""
    event_types: EventTypeList = Field(default_factory=list)
    enabled: bool = True


class EndpointUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"event_types": ["key.revoked"]}]}
    )

    url: WebhookUrl | None = None
    description: Description | None = None
    event_types: EventTypeList | None = None


class RotateSecret(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grace_period_seconds": 86400}]}
    )

    grace_period_seconds: GracePeriod | None = None


class EndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_OUT]})

    id: uuid.UUID
    url: str
    description: str
    event_types: list[str] = Field(description="Empty: every event type.")
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why it is disabled: `manual` (a call), `gone` (it answered 410) or "
        "`failing` (every attempt failed for the configured time); null while enabled."
    )
    disabled_at: datetime | None
    secret_rotated_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the previous secret also signs deliveries; null: it does not."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointOut:
        return cls.model_validate(endpoint)


class EndpointWithSecret(EndpointOut):
    """The endpoint, and its signing secret: shown here, once, and never again."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**_OUT, "secret": SECRET_EXAMPLE}]})

    secret: str = Field(
        description="`whsec_` and the base64 of 32 random bytes: verify deliveries with it "
        "(Standard Webhooks). Shown once; store it now."
    )

    @classmethod
    def with_secret(cls, endpoint: WebhookEndpoint, secret: str) -> EndpointWithSecret:
        return cls(**EndpointOut.of(endpoint).model_dump(), secret=secret)

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from keyservice.fields import Description
from keyservice.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
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


_ATTEMPT: JsonDict = {
    "id": "2b1a0f9e-8d7c-4b6a-9e5f-4d3c2b1a0f9e",
    "attempted_at": "2026-11-21T09:30:01Z",
    "status_code": 503,
    "latency_ms": 120,
    "response_excerpt": "Service Unavailable",
    "error": None,
    "success": False,
}
_MESSAGE: JsonDict = {
    "id": "9c8b7a6f-5e4d-4c3b-8a2f-1e0d9c8b7a6f",
    "event_id": "8f1e2d3c-4b5a-4697-8e7f-6a5b4c3d2e1f",
    "event_type": "key.created",
    "status": "pending",
    "next_attempt_at": "2026-11-21T09:30:06Z",
    "created_at": "2026-11-21T09:30:00Z",
    "finished_at": None,
    "attempts": [_ATTEMPT],
}

DeliveryStatus = Literal["pending", "delivered", "failed"]


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_ATTEMPT]})

    id: uuid.UUID
    attempted_at: datetime
    status_code: int | None = Field(description="The endpoint's answer; null if none came.")
    latency_ms: int
    response_excerpt: str = Field(
        description="The first 4 KB of the answer's body; when no answer came, why."
    )
    error: str | None = Field(
        description="Why no answer came: `refused`, `timeout`, `tls`, `dns`, `network`, "
        "`forbidden_address` or `invalid_url`; null when the endpoint answered."
    )
    success: bool = Field(description="Whether the endpoint answered 2xx.")


class MessageOut(BaseModel):
    """One event's delivery to the endpoint: its `id` is the `webhook-id` of every attempt."""

    model_config = ConfigDict(json_schema_extra={"examples": [_MESSAGE]})

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus = Field(
        description="`pending` (to be attempted, or retried at `next_attempt_at`), `delivered`, "
        "or `failed` (every attempt failed, or the endpoint answered 410)."
    )
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptOut] = Field(description="Every attempt, oldest first.")

    @classmethod
    def of(cls, message: WebhookMessage, attempts: Sequence[WebhookAttempt]) -> MessageOut:
        return cls(
            id=message.id,
            event_id=message.event_id,
            event_type=message.event_type,
            status=message.status,
            next_attempt_at=message.next_attempt_at,
            created_at=message.created_at,
            finished_at=message.finished_at,
            attempts=[AttemptOut.model_validate(a) for a in attempts],
        )


class Replay(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"since": "2026-11-20T00:00:00Z"}]}
    )

    since: AwareDatetime = Field(description="Replay the failed messages created since then.")


class Replayed(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"replayed": 12}]})

    replayed: int = Field(description="How many failed messages are to be delivered again.")


class TestEvent(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"event_type": "key.created"}]}
    )

    event_type: EventTypeName = Field(
        description="The type of the sample event (see `GET /v1/event-types`); its `data` is "
        "the catalogue's example."
    )


class SentRequest(BaseModel):
    url: str
    headers: dict[str, str] = Field(description="Every header sent, signature included.")
    body: str = Field(description="The body, exactly as sent and signed.")


class TestResult(BaseModel):
    """What was sent, byte for byte, and what came back."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request": {
                        "url": "https://hooks.partner.example/keyservice",
                        "headers": {
                            "content-type": "application/json",
                            "user-agent": "keyservice-webhooks",
                            "webhook-id": "3f2e1d0c-9b8a-4f7e-8d6c-5b4a3f2e1d0c",
                            "webhook-timestamp": "1795685400",
                            "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
                        },
                        "body": '{"type":"key.created","timestamp":"2026-11-21T09:30:00Z",'
                        '"data":{}}',
                    },
                    "status_code": 200,
                    "latency_ms": 85,
                    "response_excerpt": "ok",
                    "error": None,
                    "success": True,
                }
            ]
        }
    )

    request: SentRequest
    status_code: int | None
    latency_ms: int
    response_excerpt: str
    error: str | None
    success: bool

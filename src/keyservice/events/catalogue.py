"""The catalogue of keyservice's own events: each type's payload (an event's ``data``) as a
pydantic model, what it means, and an example. ``GET /v1/event-types`` lists it, and webhooks
deliver from it.

A payload carries the ids of what changed and the fields that changed, never a secret: no key,
no key hash, no password, no invitation token. A key's ``hint`` (``ks_live_…a1B2``) is no
secret: key lists show it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    Field,
    RootModel,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic.json_schema import SkipJsonSchema

from keyservice.models import Role
from keyservice.ratelimit.schemas import RateLimit
from keyservice.security import Environment

T = TypeVar("T")


class Payload(BaseModel):
    """Receivers should ignore fields they do not know: payloads may gain fields, never lose
    them (hence no ``extra="forbid"``, which the schema would publish)."""


class Change(BaseModel, Generic[T]):
    """A field's value before and after the change."""

    from_: T = Field(alias="from")
    to: T


def change(old: Any, new: Any) -> dict[str, Any]:
    """A ``Change``'s fields, for the ``changes`` of an update's payload."""
    return {"from": old, "to": new}


class Changes(Payload):
    """The fields that changed, and only those: a field that did not change is absent (never
    null)."""

    @model_serializer(mode="wrap")
    def _only_changed(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {name: value for name, value in handler(self).items() if value is not None}


def _absent_when_unchanged(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _changed(description: str) -> Any:
    return Field(default=None, description=description, json_schema_extra=_absent_when_unchanged)


# --- keys --------------------------------------------------------------------------------------

KeyKindName = Literal["application", "personal"]


class KeyData(Payload):
    key_id: uuid.UUID
    kind: KeyKindName = Field(
        description="`application`: the key of an application of the account. `personal`: a "
        "user's own key, which reaches every account the user has joined, so that its events "
        "are recorded in each of them."
    )
    application_id: uuid.UUID | None = Field(
        description="The key's application; null for a user's."
    )
    user_id: uuid.UUID | None = Field(description="The key's user; null for an application's.")


class KeyCreatedData(KeyData):
    name: str
    hint: str = Field(description="Enough of the key to recognise it: never the secret.")
    environment: Environment
    scopes: list[str]
    expires_at: datetime | None
    rate_limit: RateLimit | None = Field(description="The key's own rate limit; null inherits.")
    monthly_quota: int | None = Field(description="The key's own monthly quota; null inherits.")
    alert_quota_percents: list[int] | None = Field(
        description="The key's own quota alert percents; null inherits."
    )
    alert_rate_limited_refusals: int | None = Field(
        description="The key's own rate-limited alert threshold; null inherits."
    )


class KeyChanges(Changes):
    name: Change[str] | SkipJsonSchema[None] = _changed("The key was renamed.")
    rate_limit: Change[RateLimit | None] | SkipJsonSchema[None] = _changed(
        "The key's own rate limit; null inherits."
    )
    monthly_quota: Change[int | None] | SkipJsonSchema[None] = _changed(
        "The key's own monthly quota; null inherits."
    )
    alert_quota_percents: Change[list[int] | None] | SkipJsonSchema[None] = _changed(
        "The key's own quota alert percents; null inherits."
    )
    alert_rate_limited_refusals: Change[int | None] | SkipJsonSchema[None] = _changed(
        "The key's own rate-limited alert threshold; null inherits."
    )


class KeyUpdatedData(KeyData):
    changes: KeyChanges = Field(description="The fields that changed, and only those.")


class KeyRotatedData(KeyData):
    hint: str = Field(description="The new secret's hint.")
    rotated_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="When the previous secret stops working (the end of the grace period); "
        "null: it stopped at once."
    )


class KeyRevokedData(KeyData):
    revoked_at: datetime


class KeyExpiryData(KeyData):
    name: str
    hint: str = Field(description="Enough of the key to recognise it: never the secret.")
    expires_at: datetime


class KeyExpiringData(KeyExpiryData):
    lead_seconds: int = Field(
        description="The warning's lead time (604800: the 7-day warning, 86400: the 1-day one)."
    )


class KeyExpiredData(KeyExpiryData):
    pass


# --- applications ------------------------------------------------------------------------------


class ApplicationCreatedData(Payload):
    application_id: uuid.UUID
    name: str
    developer_email: str
    description: str
    permissions: list[str]
    rate_limit: RateLimit | None
    monthly_quota: int | None


class ApplicationChanges(Changes):
    name: Change[str] | SkipJsonSchema[None] = _changed("The application was renamed.")
    developer_email: Change[str] | SkipJsonSchema[None] = _changed("Its developer email.")
    description: Change[str] | SkipJsonSchema[None] = _changed("Its description.")
    permissions: Change[list[str]] | SkipJsonSchema[None] = _changed(
        "The scopes its keys may hold: narrowing them narrowed its keys at once."
    )
    rate_limit: Change[RateLimit | None] | SkipJsonSchema[None] = _changed(
        "Its rate limit; null inherits."
    )
    monthly_quota: Change[int | None] | SkipJsonSchema[None] = _changed(
        "Its monthly quota; null inherits."
    )


class ApplicationUpdatedData(Payload):
    application_id: uuid.UUID
    changes: ApplicationChanges = Field(description="The fields that changed, and only those.")


class ApplicationDeletedData(Payload):
    application_id: uuid.UUID
    name: str
    key_ids: list[uuid.UUID] = Field(
        description="Its keys, deleted with it: they stopped working at once."
    )


# --- members -----------------------------------------------------------------------------------


class MemberData(Payload):
    user_id: uuid.UUID
    email: str


class MemberAddedData(MemberData):
    role: Role
    invited: bool = Field(
        description="Whether the user joined by accepting an invitation (a user who already "
        "existed), rather than at once (a user created for the account)."
    )


class MemberChanges(Changes):
    role: Change[Role] | SkipJsonSchema[None] = _changed("The member's role.")


class MemberUpdatedData(MemberData):
    changes: MemberChanges = Field(description="The fields that changed, and only those.")


class MemberRemovedData(MemberData):
    role: Role = Field(description="The role the member had.")


# --- usage -------------------------------------------------------------------------------------


class MonthlyQuotaThreshold(Payload):
    key_id: uuid.UUID
    kind: Literal["monthly_quota"]
    percent: int = Field(description="The share of the quota crossed (80, 100, ...).")
    quota: int = Field(description="The key's monthly quota.")
    used: int = Field(description="Requests counted against the quota when it was crossed.")
    month: str = Field(pattern=r"^\d{4}-\d{2}$", description="The calendar month (UTC).")


class RateLimitedThreshold(Payload):
    key_id: uuid.UUID
    kind: Literal["rate_limited"]
    hour: AwareDatetime = Field(description="The start of the hour (UTC).")
    rate_limited: int = Field(description="Requests refused by the key's limits in that hour.")
    threshold: int = Field(description="The number of refusals that raises the alert.")


class UsageThresholdData(
    RootModel[Annotated[MonthlyQuotaThreshold | RateLimitedThreshold, Field(discriminator="kind")]]
):
    """By ``kind``: ``monthly_quota`` or ``rate_limited``."""


# --- webhooks ----------------------------------------------------------------------------------


class WebhookEndpointDisabledData(Payload):
    endpoint_id: uuid.UUID
    url: str
    reason: Literal["gone", "failing"] = Field(
        description="`gone`: the endpoint answered 410 Gone. `failing`: every delivery attempt "
        "failed for the configured time."
    )
    failing_since: datetime | None = Field(
        description="Since when every attempt failed (`failing`); null for `gone`."
    )


# --- the catalogue -----------------------------------------------------------------------------

_KEY = {
    "key_id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
    "kind": "application",
    "application_id": "0b9c6f5e-8d7a-4b3c-9e2f-1a0b9c8d7e6f",
    "user_id": None,
}
_APPLICATION_ID = "0b9c6f5e-8d7a-4b3c-9e2f-1a0b9c8d7e6f"
_MEMBER = {"user_id": "7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d", "email": "dana@example.com"}


# Seeing an event tells what it is about: it takes the scope that reads that.
READ_SCOPES = {
    "key": "keyservice:keys:read",
    "application": "keyservice:applications:read",
    "member": "keyservice:members:read",
    "usage": "keyservice:usage:read",
    "webhook": "keyservice:webhooks:read",
}


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    description: str
    model: type[BaseModel]
    example: dict[str, Any]

    @property
    def scope(self) -> str:
        """The scope a key needs to see events of this type."""
        return READ_SCOPES[self.name.partition(".")[0]]


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(
        "key.created",
        "A key was created: an application's, or a user's personal key. A personal key's events "
        "are recorded in each account its user has joined. The secret is never in an event.",
        KeyCreatedData,
        {
            **_KEY,
            "name": "Production Integration",
            "hint": "ks_live_…a1B2",
            "environment": "live",
            "scopes": ["contacts:read", "deals:read"],
            "expires_at": "2027-01-30T12:00:00Z",
            "rate_limit": None,
            "monthly_quota": None,
            "alert_quota_percents": None,
            "alert_rate_limited_refusals": None,
        },
    ),
    EventType(
        "key.updated",
        "A key was renamed, or its limits or alert thresholds changed: `changes` holds each "
        "changed field, from and to.",
        KeyUpdatedData,
        {
            **_KEY,
            "changes": {
                "name": {"from": "Production Integration", "to": "Zapier (production)"},
                "monthly_quota": {"from": None, "to": 100000},
            },
        },
    ),
    EventType(
        "key.rotated",
        "A key got a new secret. The previous one stopped working at once, or stops at "
        "`previous_secret_expires_at` (the grace period's end).",
        KeyRotatedData,
        {
            **_KEY,
            "hint": "ks_live_…Z9y8",
            "rotated_at": "2026-11-21T09:30:00Z",
            "previous_secret_expires_at": "2026-11-22T09:30:00Z",
        },
    ),
    EventType(
        "key.revoked",
        "A key was revoked: it stopped working at once, everywhere.",
        KeyRevokedData,
        {**_KEY, "revoked_at": "2026-11-21T09:30:00Z"},
    ),
    EventType(
        "key.expiring",
        "A key expires soon: sent once per lead time (7 days and 1 day before `expires_at` by "
        "default), from the nearest one; a key that is revoked first gets none.",
        KeyExpiringData,
        {
            **_KEY,
            "name": "Production Integration",
            "hint": "ks_live_…a1B2",
            "expires_at": "2027-01-30T12:00:00Z",
            "lead_seconds": 604800,
        },
    ),
    EventType(
        "key.expired",
        "A key reached its `expires_at`: it no longer verifies. Sent once.",
        KeyExpiredData,
        {
            **_KEY,
            "name": "Production Integration",
            "hint": "ks_live_…a1B2",
            "expires_at": "2027-01-30T12:00:00Z",
        },
    ),
    EventType(
        "application.created",
        "An application was created.",
        ApplicationCreatedData,
        {
            "application_id": _APPLICATION_ID,
            "name": "Zapier sync",
            "developer_email": "dev@partner.example",
            "description": "Two-way sync of contacts and deals",
            "permissions": ["contacts:read", "contacts:write", "deals:read"],
            "rate_limit": {"limit": 100, "period_seconds": 60, "burst": 100},
            "monthly_quota": 100000,
        },
    ),
    EventType(
        "application.updated",
        "An application changed: `changes` holds each changed field, from and to.",
        ApplicationUpdatedData,
        {
            "application_id": _APPLICATION_ID,
            "changes": {
                "permissions": {
                    "from": ["contacts:read", "contacts:write", "deals:read"],
                    "to": ["contacts:read"],
                }
            },
        },
    ),
    EventType(
        "application.deleted",
        "An application was deleted, and its keys with it (`key_ids`): they stopped working at "
        "once.",
        ApplicationDeletedData,
        {
            "application_id": _APPLICATION_ID,
            "name": "Zapier sync",
            "key_ids": ["1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f"],
        },
    ),
    EventType(
        "member.added",
        "A user became a member of the account: a new user at once, a user who already existed "
        "when they accepted their invitation (`invited`). A pending invitation is no member yet.",
        MemberAddedData,
        {**_MEMBER, "role": "admin", "invited": False},
    ),
    EventType(
        "member.updated",
        "A member's role changed. An invitation's role changed before it is accepted records "
        "nothing: `member.added` carries the role it is accepted with.",
        MemberUpdatedData,
        {**_MEMBER, "changes": {"role": {"from": "member", "to": "admin"}}},
    ),
    EventType(
        "member.removed",
        "A member was removed from the account: their personal keys no longer reach it. An "
        "invitation withdrawn before it was accepted records nothing.",
        MemberRemovedData,
        {**_MEMBER, "role": "admin"},
    ),
    EventType(
        "usage.threshold",
        "A key crossed a share of its monthly quota (80% and 100% by default; `kind` "
        "`monthly_quota`), or was refused by its limits many times within an hour (`kind` "
        "`rate_limited`). Recorded once per threshold and period.",
        UsageThresholdData,
        {
            "key_id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
            "kind": "monthly_quota",
            "percent": 80,
            "quota": 100000,
            "used": 80000,
            "month": "2026-11",
        },
    ),
    EventType(
        "webhook.endpoint.disabled",
        "keyservice disabled a webhook endpoint: it answered 410 Gone (`gone`), or every "
        "delivery to it failed for the configured time (`failing`). Messages for it wait until "
        "it is enabled again. Never delivered to the endpoint it is about.",
        WebhookEndpointDisabledData,
        {
            "endpoint_id": "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a",
            "url": "https://hooks.partner.example/keyservice",
            "reason": "failing",
            "failing_since": "2026-11-16T09:30:00Z",
        },
    ),
)

BY_TYPE: dict[str, EventType] = {t.name: t for t in EVENT_TYPES}
_BY_MODEL: dict[type[BaseModel], EventType] = {t.model: t for t in EVENT_TYPES}


def type_of(data: BaseModel) -> str:
    """The event type whose payload ``data`` is; a payload of no type is a bug."""
    try:
        return _BY_MODEL[type(data)].name
    except KeyError:
        raise TypeError(f"{type(data).__name__} is the payload of no event type") from None


def dump(data: BaseModel) -> dict[str, Any]:
    """A payload as it is stored and delivered: JSON types, fields named as documented."""
    dumped: dict[str, Any] = data.model_dump(mode="json", by_alias=True)
    return dumped

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from keyservice.fields import Name, Scope
from keyservice.models import KeyKind, KeyStatus
from keyservice.ratelimit.schemas import (
    QUOTA_FIELD,
    RATE_FIELD,
    AlertPercents,
    AlertThresholds,
    RateLimit,
    alert_percents_field,
    alert_refusals_field,
)
from keyservice.security import Environment

MAX_EXPIRY_YEAR = 9000
# For a personal key, the account is the one each request acts on.
INHERITS = "(the account's, then the deployment's)"


class ExpiryPreset(StrEnum):
    d30 = "30d"
    d90 = "90d"
    d180 = "180d"
    never = "never"

    @property
    def delta(self) -> timedelta | None:
        return None if self is ExpiryPreset.never else timedelta(days=int(self.value[:-1]))


class KeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Production Integration",
                    "scopes": ["contacts:read", "deals:read"],
                    "environment": "live",
                    "expires_in": "90d",
                }
            ]
        },
    )

    name: Name = Field(description='What the key is for, e.g. "Production Integration".')
    scopes: list[Scope] = Field(
        max_length=100,
        description="Each in the catalogue and within the application's permissions.",
    )
    environment: Environment = Environment.live
    expires_in: ExpiryPreset | None = Field(
        default=None,
        description="30d, 90d, 180d or never (the default). Exclusive with `expires_at`.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="An explicit expiry in the future, with a timezone."
    )
    rate_limit: RateLimit | None = RATE_FIELD
    monthly_quota: int | None = QUOTA_FIELD
    alert_quota_percents: AlertPercents | None = alert_percents_field(INHERITS)
    alert_rate_limited_refusals: int | None = alert_refusals_field(INHERITS)

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_in is not None and self.expires_at is not None:
            raise ValueError("give expires_in or expires_at, not both")
        if self.expires_at is not None:
            try:
                self.expires_at = self.expires_at.astimezone(UTC)
            except OverflowError:
                raise ValueError("expires_at is out of range") from None
            if self.expires_at <= datetime.now(UTC):
                raise ValueError("expires_at must be in the future")
            if self.expires_at.year > MAX_EXPIRY_YEAR:
                raise ValueError(f"expires_at must be before {MAX_EXPIRY_YEAR + 1}")
        return self

    def expiry(self, now: datetime) -> datetime | None:
        if self.expires_at is not None:
            return self.expires_at
        delta = (self.expires_in or ExpiryPreset.never).delta
        return now + delta if delta else None


class KeyUpdate(BaseModel):
    """Fields to change; for the limits and alert thresholds, null means inherit again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Staging Webhook"},
                {"rate_limit": {"limit": 10, "period_seconds": 1}, "monthly_quota": None},
                {"alert_quota_percents": [50, 90, 100], "alert_rate_limited_refusals": None},
            ]
        },
    )

    name: Name | None = None
    rate_limit: RateLimit | None = RATE_FIELD
    monthly_quota: int | None = QUOTA_FIELD
    alert_quota_percents: AlertPercents | None = alert_percents_field(INHERITS)
    alert_rate_limited_refusals: int | None = alert_refusals_field(INHERITS)


_KEY_EXAMPLE: JsonDict = {
    "id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
    "kind": "application",
    "name": "Production Integration",
    "hint": "ks_live_…a1B2",
    "environment": "live",
    "scopes": ["contacts:read", "deals:read"],
    "status": "active",
    "application_id": "0b9c6f5e-8d7a-4b3c-9e2f-1a0b9c8d7e6f",
    "user_id": None,
    "created_at": "2026-11-01T12:00:00Z",
    "updated_at": "2026-11-01T12:00:00Z",
    "last_rotated_at": None,
    "last_used_at": None,
    "expires_at": "2027-01-30T12:00:00Z",
    "revoked_at": None,
    "rate_limit": None,
    "monthly_quota": None,
    "alert_quota_percents": None,
    "alert_rate_limited_refusals": None,
    "alert_thresholds": {"quota_percents": [80, 100], "rate_limited_refusals": 100},
}


class KeyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_KEY_EXAMPLE]})

    id: uuid.UUID
    kind: KeyKind
    name: str
    hint: str = Field(
        description="Enough of the key to recognise it; the secret is never shown again."
    )
    environment: Environment
    scopes: list[str]
    status: KeyStatus
    application_id: uuid.UUID | None
    user_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    last_rotated_at: datetime | None
    last_used_at: datetime | None = Field(
        description="When the key was last verified, to the second; written with its usage "
        "counts at most once a minute, so it may lag by up to a minute."
    )
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit: RateLimit | None = Field(description="The key's own rate limit; null inherits.")
    monthly_quota: int | None = Field(description="The key's own monthly quota; null inherits.")
    alert_quota_percents: list[int] | None = Field(
        description="The key's own quota alert percents; null inherits."
    )
    alert_rate_limited_refusals: int | None = Field(
        description="The key's own rate-limited alert threshold; null inherits."
    )
    alert_thresholds: AlertThresholds = Field(
        description="The alert thresholds in force: the key's own, else its account's, else the "
        "deployment's. A personal key's requests on an account use that account's where the key "
        "sets none; shown here for a personal key: the key's own, else the deployment's."
    )


class KeyCreated(KeyOut):
    """A new key, with its secret: this response is the only place it ever appears."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_KEY_EXAMPLE,
                    "key": "ks_live_4eC39HqLyjWDarjtT1zdp7dc3jd9Qk1a2B",
                }
            ]
        }
    )

    key: str = Field(description="The secret. Store it now: it is never shown again.")


class KeyRotate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grace_period_seconds": 86400}]}
    )

    grace_period_seconds: int = Field(
        default=0,
        ge=0,
        le=7 * 24 * 3600,
        description="How long the old secret keeps working (0, the default, to 7 days).",
    )


class PersonalKeyCreate(KeyCreate):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "My reporting script",
                    "scopes": ["reports:read", "deals:read"],
                    "expires_in": "90d",
                }
            ]
        },
    )

    scopes: list[Scope] = Field(
        max_length=100,
        description="Any scopes of the catalogue; in each account the key is limited by the "
        "user's role there.",
    )

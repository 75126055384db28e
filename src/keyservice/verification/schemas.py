from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from keyservice.fields import Endpoint, IPAddress, Scope
from keyservice.models import KeyKind, Role
from keyservice.security import Environment


class VerifyCode(StrEnum):
    VALID = "VALID"
    MALFORMED = "MALFORMED"
    NOT_FOUND = "NOT_FOUND"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"
    INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
    ACCOUNT_REQUIRED = "ACCOUNT_REQUIRED"
    ACCOUNT_FORBIDDEN = "ACCOUNT_FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"


class VerifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "key": "ks_live_4eC39HqLyjWDarjtT1zdp7dc3jd9Qk1aBcDeFg",
                    "scopes": ["contacts:read"],
                    "endpoint": "GET /v1/contacts",
                }
            ]
        },
    )

    key: str | None = Field(
        default=None,
        max_length=512,
        description="The key to verify. Omit it to verify the key in this request's own "
        "`Authorization`/`x-api-key` header instead (not allowed when callers must authenticate).",
    )
    scopes: list[Scope] = Field(
        default_factory=list, max_length=50, description="Scopes the key must all hold."
    )
    account_id: uuid.UUID | None = Field(
        default=None,
        description="The account the request acts on. Required for a user's key that reaches "
        "several accounts.",
    )
    endpoint: Endpoint | None = Field(
        default=None,
        description='The endpoint being called, e.g. "GET /v1/contacts", for usage metering.',
    )
    cost: int = Field(
        default=1, ge=1, le=10_000, description="Tokens (and quota) this request spends."
    )
    client_address: IPAddress | None = Field(
        default=None,
        description="The address of your API's client, by which failed verifications are "
        "throttled. Counted only from an authenticated caller (its own key, holding "
        "keyservice:verify, in the request's header); otherwise ignored, and failures are "
        "throttled per address of the caller of /verify.",
    )


class VerifiedKey(BaseModel):
    id: uuid.UUID
    name: str
    kind: KeyKind
    environment: Environment
    account_id: uuid.UUID
    application_id: uuid.UUID | None
    user_id: uuid.UUID | None
    role: Role | None = Field(description="The user's role in the account, for a user's key.")
    scopes: list[str] = Field(description="The key's rights on this account.")
    expires_at: datetime | None
    rotated: bool = Field(
        description="True when the presented secret is the previous one of a rotated key, still "
        "accepted until `rotated_secret_expires_at`: time to switch to the new secret."
    )
    rotated_secret_expires_at: datetime | None


class RateLimitState(BaseModel):
    """The key's limits and where it stands: the numbers of the rate-limit headers."""

    limit: int | None = Field(description="Requests per period (token bucket), if limited.")
    period_seconds: int | None
    burst: int | None
    remaining: int | None = Field(description="Requests left now (this instance's view).")
    reset_seconds: int | None = Field(description="Seconds until the bucket is full again.")
    retry_after: int | None = Field(description="When refused: seconds before trying again.")
    monthly_quota: int | None
    quota_remaining: int | None
    quota_reset_seconds: int | None = Field(description="Seconds until the quota's month ends.")


class VerifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "valid": True,
                    "code": "VALID",
                    "detail": None,
                    "key": {
                        "id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
                        "name": "Production Integration",
                        "kind": "application",
                        "environment": "live",
                        "account_id": "2d7f1c3e-5a4b-4c8d-9e0f-1a2b3c4d5e6f",
                        "application_id": "0b9c6f5e-8d7a-4b3c-9e2f-1a0b9c8d7e6f",
                        "user_id": None,
                        "role": None,
                        "scopes": ["contacts:read", "deals:read"],
                        "expires_at": None,
                        "rotated": False,
                        "rotated_secret_expires_at": None,
                    },
                },
                {
                    "valid": False,
                    "code": "REVOKED",
                    "detail": "The API key has been revoked",
                    "key": None,
                },
            ]
        }
    )

    valid: bool
    code: VerifyCode
    detail: str | None = Field(default=None, description="Why the key was refused.")
    key: VerifiedKey | None = Field(default=None, description="Present when `valid`.")
    rate_limit: RateLimitState | None = Field(
        default=None, description="For a key with a rate limit or quota."
    )

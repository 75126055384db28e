from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field
from pydantic.config import JsonDict

from keyservice.fields import Description, Name, ScopeList
from keyservice.models import Application
from keyservice.ratelimit.schemas import QUOTA_FIELD, RATE_FIELD, RateLimit

_EXAMPLE: JsonDict = {
    "name": "Zapier sync",
    "developer_email": "dev@partner.example",
    "description": "Two-way sync of contacts and deals",
    "permissions": ["contacts:read", "contacts:write", "deals:read"],
    "rate_limit": {"limit": 100, "period_seconds": 60, "burst": 100},
    "monthly_quota": 100000,
}


class ApplicationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    name: Name
    developer_email: EmailStr = Field(
        description="Who builds and maintains the integration; used for important notices."
    )
    description: Description = ""
    permissions: ScopeList = Field(
        default_factory=list,
        description="The scopes this application's keys may hold (see `GET /v1/scopes`).",
    )
    rate_limit: RateLimit | None = RATE_FIELD
    monthly_quota: int | None = QUOTA_FIELD


class ApplicationUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"permissions": ["contacts:read"]}]}
    )

    name: Name | None = None
    developer_email: EmailStr | None = None
    description: Description | None = None
    permissions: ScopeList | None = Field(
        default=None,
        description="Narrowing the permissions narrows what existing keys can do, at once.",
    )
    rate_limit: RateLimit | None = RATE_FIELD
    monthly_quota: int | None = QUOTA_FIELD


class ApplicationOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b9c6f5e-8d7a-4b3c-9e2f-1a0b9c8d7e6f",
                    **_EXAMPLE,
                    "created_at": "2026-11-01T12:00:00Z",
                    "updated_at": "2026-11-01T12:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    name: str
    developer_email: str
    description: str
    permissions: list[str]
    rate_limit: RateLimit | None
    monthly_quota: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, application: Application) -> ApplicationOut:
        return cls(
            id=application.id,
            name=application.name,
            developer_email=application.developer_email,
            description=application.description,
            permissions=application.permissions,
            rate_limit=RateLimit.of(application),
            monthly_quota=application.monthly_quota,
            created_at=application.created_at,
            updated_at=application.updated_at,
        )

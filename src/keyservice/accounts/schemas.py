from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from keyservice.accounts import passwords
from keyservice.fields import Name
from keyservice.models import Role
from keyservice.ratelimit.schemas import (
    AlertPercents,
    AlertThresholds,
    alert_percents_field,
    alert_refusals_field,
)

Password = Annotated[str, Field(min_length=passwords.MIN_LENGTH, max_length=passwords.MAX_LENGTH)]


INHERITS = "(the deployment's)"


class AccountOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "2d7f1c3e-5a4b-4c8d-9e0f-1a2b3c4d5e6f",
                    "name": "Acme CRM",
                    "created_at": "2026-11-01T12:00:00Z",
                    "updated_at": "2026-11-01T12:00:00Z",
                    "alert_quota_percents": [50, 80, 100],
                    "alert_rate_limited_refusals": None,
                    "alert_thresholds": {
                        "quota_percents": [50, 80, 100],
                        "rate_limited_refusals": 100,
                    },
                    "alert_emails_to_admins": False,
                }
            ]
        },
    )

    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime
    alert_quota_percents: list[int] | None = Field(
        description="The account's quota alert percents, for its keys that set none; null "
        "inherits the deployment's."
    )
    alert_rate_limited_refusals: int | None = Field(
        description="The account's rate-limited alert threshold, for its keys that set none; "
        "null inherits the deployment's."
    )
    alert_thresholds: AlertThresholds = Field(
        description="The alert thresholds in force for the account's keys that set none."
    )
    alert_emails_to_admins: bool = Field(
        description="Alert emails (`usage.threshold`, `key.expiring`, "
        "`webhook.endpoint.disabled`) also go to the account's owners and admins, when the "
        "deployment sends email."
    )


class AccountUpdate(BaseModel):
    """Fields to change; for the alert thresholds, null means inherit again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Acme"},
                {"alert_quota_percents": [50, 80, 100], "alert_emails_to_admins": True},
            ]
        },
    )

    name: Name | None = None
    alert_quota_percents: AlertPercents | None = alert_percents_field(INHERITS)
    alert_rate_limited_refusals: int | None = alert_refusals_field(INHERITS)
    alert_emails_to_admins: bool | None = Field(
        default=None,
        description="Also email alerts to the account's owners and admins (default false).",
    )


MembershipStatus = Literal["active", "invited"]


class MemberOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d",
                    "email": "dana@example.com",
                    "role": "admin",
                    "status": "active",
                    "created_at": "2026-11-01T12:00:00Z",
                }
            ]
        }
    )

    user_id: uuid.UUID
    email: str
    role: Role
    status: MembershipStatus = Field(
        description="`invited` until a user who already existed accepts the invitation."
    )
    created_at: datetime


class MemberAdded(MemberOut):
    invitation_token: str | None = Field(
        description="For a user who already existed: the one-time token they accept the "
        "invitation with (`POST /v1/users/me/invitations/accept`). Hand it to them yourself; it "
        "is shown only here."
    )


class MemberCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "dana@example.com", "role": "admin", "password": "correct horse battery"}
            ]
        },
    )

    email: EmailStr
    role: Role = Role.member
    password: Password | None = Field(
        default=None,
        description="Initial password for a new user (12 characters or more). A user who already "
        "exists keeps their own password and is invited instead.",
    )


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "member"}]})

    role: Role


class LoginRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"email": "dana@example.com", "password": "correct horse battery"}]
        },
    )

    email: EmailStr
    password: Annotated[str, Field(min_length=1, max_length=256)]


class AccountMembership(BaseModel):
    account_id: uuid.UUID
    name: str
    role: Role
    status: MembershipStatus


class InvitationAccept(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"token": "ksinv_Zm9vYmFy..."}]}
    )

    token: Annotated[str, Field(min_length=1, max_length=200)]


class UserOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d",
                    "email": "dana@example.com",
                    "accounts": [
                        {
                            "account_id": "2d7f1c3e-5a4b-4c8d-9e0f-1a2b3c4d5e6f",
                            "name": "Acme CRM",
                            "role": "admin",
                            "status": "active",
                        }
                    ],
                }
            ]
        }
    )

    id: uuid.UUID
    email: str
    accounts: list[AccountMembership]


class SessionCreated(BaseModel):
    """A console session: its key carries the user's rights in each of their accounts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "ks_live_4eC39HqLyjWDarjtT1zdp7dc3jd9Qk1aBcDeFg",
                    "expires_at": "2026-11-21T20:00:00Z",
                    "user": UserOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                }
            ]
        }
    )

    key: str = Field(description="The session key, shown once. Send it like any other key.")
    expires_at: datetime
    user: UserOut

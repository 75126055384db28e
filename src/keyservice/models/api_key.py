from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base, IdMixin, JSONType, TimestampMixin
from keyservice.security import Environment


class KeyKind(StrEnum):
    application = "application"  # belongs to an application of one account
    personal = "personal"  # belongs to a user; reaches the accounts the user belongs to
    session = "session"  # a short-lived personal key from a console login


class KeyStatus(StrEnum):
    active = "active"
    revoked = "revoked"
    expired = "expired"


class ApiKey(IdMixin, TimestampMixin, Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'application' AND account_id IS NOT NULL AND application_id IS NOT NULL)"
            " OR (kind != 'application' AND user_id IS NOT NULL AND application_id IS NULL)",
            name="owner",
        ),
        Index(None, "account_id", "created_at"),
        Index(None, "user_id", "created_at"),
        Index(None, "application_id"),
    )

    kind: Mapped[KeyKind] = mapped_column(Enum(KeyKind, native_enum=False, length=16))
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    application_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    environment: Mapped[Environment] = mapped_column(Enum(Environment, native_enum=False, length=8))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(40))
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    last_rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Rotation grace: the previous secret keeps verifying until previous_expires_at.
    previous_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    previous_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_by_key_id: Mapped[uuid.UUID | None] = mapped_column(default=None)

    # Rate limit and monthly quota overrides; NULL inherits (key -> application -> deployment).
    rate_limit: Mapped[int | None] = mapped_column(default=None)
    rate_period_seconds: Mapped[int | None] = mapped_column(default=None)
    rate_burst: Mapped[int | None] = mapped_column(default=None)
    monthly_quota: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Alert thresholds; NULL inherits (key -> account -> deployment).
    alert_quota_percents: Mapped[list[int] | None] = mapped_column(JSONType, default=None)
    alert_rate_limited_refusals: Mapped[int | None] = mapped_column(default=None)

    def status_at(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return KeyStatus.revoked
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.expired
        return KeyStatus.active

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from keyservice.models.base import Base, utcnow
from keyservice.models.user import User


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    member = "member"

    @property
    def can_manage(self) -> bool:
        return self is not Role.member


class Membership(Base):
    __tablename__ = "memberships"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    # A user who already existed joins only by accepting an invitation with its one-time token:
    # another account must never be able to enrol an identity it controls into this one.
    invitation_hash: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    accepted_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(lazy="raise")

    @property
    def active(self) -> bool:
        return self.accepted_at is not None

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base, IdMixin, JSONType, TimestampMixin


class Application(IdMixin, TimestampMixin, Base):
    __tablename__ = "applications"
    __table_args__ = (Index(None, "account_id", "created_at"),)

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    developer_email: Mapped[str] = mapped_column(String(320))
    description: Mapped[str] = mapped_column(Text, default="")
    # The scopes this application's keys may hold.
    permissions: Mapped[list[str]] = mapped_column(JSONType, default=list)

    # Rate limit and monthly quota overrides; NULL inherits (key -> application -> deployment).
    rate_limit: Mapped[int | None] = mapped_column(default=None)
    rate_period_seconds: Mapped[int | None] = mapped_column(default=None)
    rate_burst: Mapped[int | None] = mapped_column(default=None)
    monthly_quota: Mapped[int | None] = mapped_column(BigInteger, default=None)

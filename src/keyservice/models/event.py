from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base, IdMixin, JSONType, utcnow


class Event(IdMixin, Base):
    """Something that happened in an account (``key.created``, ``usage.threshold``, ...; the
    catalogue is ``keyservice.events.catalogue``): the outbox that webhooks deliver from."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "account_id", "created_at"),)

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Makes "once per threshold and period" a unique constraint rather than a hope.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

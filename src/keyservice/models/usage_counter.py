from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base


class UsageCounter(Base):
    """Verifications of one key, for one endpoint, in one hour (UTC)."""

    __tablename__ = "usage_counters"
    __table_args__ = (Index(None, "account_id", "hour"),)

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    # The account the key acted on (a user's key may act on several).
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    allowed: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of the refused, those refused by the key's rate limit or quota.
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)

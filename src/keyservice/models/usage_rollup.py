from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base


class UsageAccountHour(Base):
    """An account's verifications for one endpoint in one hour (UTC), all its keys together:
    what its usage page sums, instead of every key's counters (written with them)."""

    __tablename__ = "usage_account_hours"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    allowed: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageKeyDay(Base):
    """One key's verifications in one day (UTC), all endpoints together: the busiest keys of a
    month are summed from 30 rows a key, not 720 and more (written with the counters)."""

    __tablename__ = "usage_key_days"
    __table_args__ = (Index(None, "account_id", "day"),)

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[datetime] = mapped_column(primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    allowed: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)

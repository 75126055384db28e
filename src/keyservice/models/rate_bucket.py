from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Float, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base


class RateBucket(Base):
    """A key's token bucket and monthly quota, shared by every instance.

    Instances lease tokens from it with one atomic UPDATE (for many keys at once) whose arithmetic
    reads only this row and the request (see ``keyservice.ratelimit.buckets``). Times are the
    database's clock, in epoch seconds, so that instances whose clocks disagree cannot refill a
    bucket twice.
    """

    __tablename__ = "rate_buckets"

    key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    tokens: Mapped[float] = mapped_column(Float)
    refilled_epoch: Mapped[float] = mapped_column(Float)
    # Tokens handed out in leases and possibly still unspent, per lease window: they count against
    # the bucket's capacity until their leases have expired.
    window: Mapped[int] = mapped_column(BigInteger, default=0)
    window_ms: Mapped[int] = mapped_column(default=0)
    leased_previous: Mapped[float] = mapped_column(Float, default=0.0)
    leased_current: Mapped[float] = mapped_column(Float, default=0.0)
    # Long leases, taken by instances that use the key less often than a short lease lives: the
    # same accounting in windows of their own length.
    long_window: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    long_window_ms: Mapped[int] = mapped_column(default=0, server_default="0")
    long_leased_previous: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    long_leased_current: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    last_take: Mapped[float] = mapped_column(Float, default=0.0)
    # The calendar month (UTC, yyyymm) of quota_used.
    quota_month: Mapped[int] = mapped_column(default=0)
    quota_used: Mapped[int] = mapped_column(BigInteger, default=0)

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base


class LoginThrottle(Base):
    """Failed logins per email (hashed) and per client address, in fixed windows."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int]
    window_ends_at: Mapped[datetime]

from __future__ import annotations

from sqlalchemy import String, false
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base, IdMixin, JSONType, TimestampMixin


class Account(IdMixin, TimestampMixin, Base):
    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(200))
    # When its keys' usage raises alerts, where a key sets none; NULL inherits the deployment's.
    alert_quota_percents: Mapped[list[int] | None] = mapped_column(JSONType, default=None)
    alert_rate_limited_refusals: Mapped[int | None] = mapped_column(default=None)
    # Alert emails also go to the account's owners and admins.
    alert_emails_to_admins: Mapped[bool] = mapped_column(default=False, server_default=false())

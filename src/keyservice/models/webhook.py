from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from keyservice.models.base import Base, IdMixin, JSONType, TimestampMixin, utcnow


class MessageStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    """Where an account's events are delivered: a URL, the event types it subscribes to (none:
    all), and its signing secret, encrypted (``keyservice.secretbox``)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index(None, "account_id", "created_at"),)

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(Text, default="")
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    # Why it is disabled: `manual`, `gone` (it answered 410) or `failing`.
    disabled_reason: Mapped[str | None] = mapped_column(String(16), default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # During a rotation's grace period, deliveries are signed with both secrets.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(default=None)
    # Since when every attempt has failed; null after a success.
    failing_since: Mapped[datetime | None] = mapped_column(default=None)


class WebhookMessage(IdMixin, Base):
    """One event to deliver to one endpoint; its id is the ``webhook-id`` of every attempt.

    The delivery worker claims a due message by moving ``next_attempt_at`` forward by a lease
    (``claimed_by`` says whose): a claim that is not settled in time falls due again."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        # The worker's claim: due pending messages, oldest due first.
        Index(
            "ix_webhook_messages_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(None, "endpoint_id", "created_at"),
        Index("ix_webhook_messages_finished", "status", "finished_at"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=MessageStatus.pending)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    claimed_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookAttempt(IdMixin, Base):
    """One try at delivering a message: what the endpoint answered, or why it could not."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index(None, "message_id", "attempted_at"),)

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_messages.id", ondelete="CASCADE")
    )
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None] = mapped_column(default=None)
    latency_ms: Mapped[int] = mapped_column(default=0)
    # The first 4 KB of the response's body.
    response_excerpt: Mapped[str] = mapped_column(Text, default="")
    # Why there was no response: refused, timeout, tls, dns, forbidden_address, ...
    error: Mapped[str | None] = mapped_column(String(32), default=None)
    success: Mapped[bool] = mapped_column(default=False)

"""Every table, and the shared declarative base (one import for Alembic)."""

from keyservice.models.account import Account
from keyservice.models.api_key import ApiKey, KeyKind, KeyStatus
from keyservice.models.application import Application
from keyservice.models.audit_event import AuditEvent
from keyservice.models.base import Base, utcnow
from keyservice.models.email_message import EmailMessage
from keyservice.models.event import Event
from keyservice.models.login_throttle import LoginThrottle
from keyservice.models.membership import Membership, Role
from keyservice.models.rate_bucket import RateBucket
from keyservice.models.usage_counter import UsageCounter
from keyservice.models.usage_rollup import UsageAccountHour, UsageKeyDay
from keyservice.models.user import User
from keyservice.models.webhook import (
    MessageStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)

__all__ = [
    "Account",
    "ApiKey",
    "Application",
    "AuditEvent",
    "Base",
    "EmailMessage",
    "Event",
    "KeyKind",
    "KeyStatus",
    "LoginThrottle",
    "Membership",
    "MessageStatus",
    "RateBucket",
    "Role",
    "UsageAccountHour",
    "UsageCounter",
    "UsageKeyDay",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
    "utcnow",
]

"""Deployment settings, read from ``KEYSERVICE_*`` environment variables."""

from __future__ import annotations

import re
import ssl
from enum import StrEnum
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Self

from fastapi import Depends, Request
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keyservice.secretbox import is_fernet_key

ENV_PREFIX = "KEYSERVICE_"
SQLITE_DEFAULT_URL = "sqlite+aiosqlite:///./keyservice.db"

DEFAULT_SCOPES = tuple(
    f"{resource}:{action}"
    for resource in ("contacts", "deals", "activities", "automations", "users", "reports")
    for action in ("read", "write")
)

SCOPE_RE = re.compile(r"^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)*:[a-z][a-z0-9_-]*$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
# The first word of keyservice's own event types: the product's may not use them.
OWN_EVENT_RESOURCES = frozenset({"key", "application", "member", "usage", "webhook", "keyservice"})


class LogFormat(StrEnum):
    json = "json"
    text = "text"


class Mode(StrEnum):
    development = "development"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    mode: Mode = Mode.development
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL. Unset: the embedded SQLite file ./keyservice.db "
        "(development only).",
    )
    scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_SCOPES,
        description="The product's scope catalogue, comma-separated (`contacts:read,deals:write`).",
    )
    key_prefix: str = Field(default="ks", description="First part of every issued key.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    db_pool_size: int = Field(default=20, ge=1)
    db_connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long to wait for a new database connection before calling it an outage.",
    )
    db_max_overflow: int = Field(
        default=0,
        ge=0,
        description="Connections beyond the pool, opened for a burst and closed after it: under "
        "bursts they are opened and closed all the time, which costs more than waiting.",
    )

    # Verification
    cache_max_entries: int = Field(default=100_000, ge=0, description="0 disables the cache.")
    cache_ttl_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Backstop only: changes reach every instance's cache through invalidations.",
    )
    verify_requires_auth: bool = Field(
        default=False,
        description="Require callers of POST /v1/verify to send their own key, holding "
        "keyservice:verify, in the request headers (the key to check then goes in the body).",
    )
    verify_failures_per_minute: int = Field(
        default=60,
        ge=0,
        description="Failed verifications (malformed or unknown keys) a client address may make "
        "per minute, with as much burst, before it is refused; 0 disables the check.",
    )
    verify_block_seconds: int = Field(default=60, ge=1)
    outage_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="While the database is unreachable, keys this instance has cached keep "
        "verifying for this long from the outage's start; a revocation made meanwhile takes "
        "effect when the database is back. 0: refuse everything (503) at once.",
    )

    # Rate limits and quotas: the deployment's defaults, which applications and keys may override
    rate_limit: int | None = Field(
        default=None, ge=1, description="Requests per rate_period_seconds; unset for no limit."
    )
    rate_period_seconds: int = Field(default=1, ge=1, le=86400)
    rate_burst: int | None = Field(default=None, ge=1, description="Default: rate_limit.")
    monthly_quota: int | None = Field(default=None, ge=1)

    # Usage metering and alerts
    usage_flush_seconds: float = Field(default=1.0, gt=0, le=60)
    usage_max_pending_rows: int = Field(
        default=100_000,
        ge=100,
        description="Usage counters kept in memory while they cannot be written (database "
        "unreachable); new ones beyond it are dropped and counted.",
    )
    usage_max_endpoints: int = Field(
        default=50, ge=1, description="Endpoints counted apart per key and hour; the rest as other."
    )
    quota_alert_percents: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(80, 100),
        description="Shares of a key's monthly quota (1 to 100) whose crossing raises an alert; "
        "accounts and keys may set their own.",
    )
    rate_limited_alert_refusals: int = Field(
        default=100,
        ge=1,
        description="Refusals of a key in an hour that raise an alert; accounts and keys may "
        "set their own.",
    )

    # Operations
    metrics_enabled: bool = Field(
        default=True,
        description="false: no request is counted and GET /metrics answers 404.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics requires `Authorization: Bearer <token>`.",
    )
    log_format: LogFormat | None = Field(
        default=None,
        description="`json` (one object per line) or `text`; unset: json in production, text "
        "in development.",
    )

    # The product's own events
    event_types: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("contact.created", "deal.won", "automation.triggered"),
        description="The product's event types, comma-separated, each optionally `=` the path "
        "of a JSON Schema file its data must match: `contact.created=/etc/ks/contact.json`.",
    )
    event_max_data_bytes: int = Field(
        default=16 * 1024,
        ge=256,
        le=1024 * 1024,
        description="The largest `data` a published event may carry, as compact JSON.",
    )

    # Webhooks
    encryption_key: SecretStr | None = Field(
        default=None,
        description="The Fernet key (`Fernet.generate_key()`: 32 bytes, url-safe base64) that "
        "encrypts webhook signing secrets at rest. Required in production; in development, one "
        "is generated into the database's directory when first needed.",
    )
    webhook_allowed_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Networks (`10.0.0.0/8,127.0.0.1/32`) that webhook endpoints may reach "
        "although they are not public, over http too. Development mode allows every address.",
    )
    webhook_secret_grace_seconds: int = Field(
        default=24 * 3600,
        ge=0,
        le=7 * 24 * 3600,
        description="How long a rotated endpoint secret keeps signing beside the new one.",
    )
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(5.0, 300.0, 1800.0, 7200.0, 18000.0),
        min_length=1,
        max_length=20,
        description="Seconds before each retry of a failed delivery (each up to 10% later, at "
        "random); after the last, the message has failed.",
    )
    webhook_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=60,
        description="How long one delivery attempt may take, from its connection to the end of "
        "the answer's first 4 KB.",
    )
    webhook_ca_file: Path | None = Field(
        default=None,
        description="A PEM file of certificate authorities trusted for webhook receivers, besides "
        "the public ones (a receiver inside the company network with the company's own CA).",
    )
    webhook_claim_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a worker's claim on a message lasts; one not settled by then (its "
        "instance died) is taken over. Longer than the timeout.",
    )
    webhook_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=300,
        description="How often each worker looks for due deliveries (retries; new messages on "
        "SQLite). On PostgreSQL a commit's NOTIFY wakes the workers at once.",
    )
    webhook_batch_size: int = Field(
        default=50, ge=1, le=1000, description="Messages a worker claims at once."
    )
    webhook_max_in_flight: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Deliveries a worker has under way at once, at most (at least a batch): it "
        "claims a batch more whenever it has room for one.",
    )

    webhook_disable_after_seconds: float = Field(
        default=5 * 24 * 3600,
        gt=0,
        description="An endpoint every attempt to which has failed for this long is disabled.",
    )
    webhook_retention_days: float = Field(
        default=30,
        gt=0,
        description="Delivered and failed messages older than this are removed, with their "
        "attempts.",
    )
    webhook_retention_batch: int = Field(default=1000, ge=1, le=100_000)
    key_expiry_warning_days: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(7.0, 1.0),
        max_length=10,
        description="How long before a key's expiry each `key.expiring` warning is recorded.",
    )
    scheduler_interval_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often each instance runs the periodic work (expiry warnings, endpoint "
        "health, retention); once across instances.",
    )

    # Alerts by email
    smtp_url: SecretStr | None = Field(
        default=None,
        description="Where alert emails go: `smtp://[user:password@]host[:port][?starttls=true]` "
        "or `smtps://...`. Unset: no email.",
    )
    smtp_from: str = Field(default="keyservice <keyservice@localhost>", max_length=320)

    # The console (server-rendered pages) and its sessions
    console_enabled: bool = Field(
        default=True, description="Serve the console's pages; off leaves the API alone."
    )
    console_prefix: str = Field(
        default="/console",
        pattern=r"^(/[A-Za-z0-9._~-]+)+$",
        max_length=100,
        description="Where the console is served, a path such as `/console` (no trailing slash).",
    )
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)
    login_failures_per_email: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)

    @field_validator(
        "scopes",
        "quota_alert_percents",
        "webhook_allowed_networks",
        "webhook_retry_schedule",
        "event_types",
        "key_expiry_warning_days",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(s.strip() for s in value.split(",") if s.strip())
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not SCOPE_RE.match(scope) or scope.endswith(":*"):
                raise ValueError(f"invalid scope {scope!r}: expected resource:action")
            if scope.startswith("keyservice:"):
                raise ValueError(f"scope {scope!r}: the keyservice: namespace is reserved")
        return tuple(dict.fromkeys(value))

    @field_validator("quota_alert_percents")
    @classmethod
    def _check_alert_percents(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for percent in value:
            if not 1 <= percent <= 100:
                raise ValueError(f"alert percent {percent}: expected 1 to 100")
        return tuple(sorted(set(value)))

    @field_validator("event_types")
    @classmethod
    def _check_event_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = []
        for entry in value:
            name = entry.partition("=")[0].strip()
            if not EVENT_TYPE_RE.match(name) or len(name) > 64:
                raise ValueError(
                    f"invalid event type {name!r}: expected lowercase dotted words "
                    "(`contact.created`)"
                )
            if name.partition(".")[0] in OWN_EVENT_RESOURCES:
                raise ValueError(f"event type {name!r}: keyservice's own events use that name")
            names.append(name)
        if len(set(names)) != len(names):
            raise ValueError("an event type is listed twice")
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"invalid network {network!r}: expected an address or CIDR"
                ) from None
        return value

    @field_validator("webhook_ca_file")
    @classmethod
    def _check_ca_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return value
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(value))
        except (OSError, ssl.SSLError):
            raise ValueError(f"{value}: not a readable PEM file of certificates") from None
        return value

    @field_validator("encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not is_fernet_key(value.get_secret_value()):
            raise ValueError("must be a Fernet key: 32 bytes in url-safe base64 (44 characters)")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("smtp://", "smtps://")):
            raise ValueError("expected smtp://host[:port] or smtps://host[:port]")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not PREFIX_RE.match(value):
            raise ValueError("must be 1-16 lowercase letters or digits, starting with a letter")
        return value

    @model_validator(mode="after")
    def _production_needs_database(self) -> Self:
        if self.mode is Mode.production and not self.database_url:
            raise ValueError(
                "KEYSERVICE_DATABASE_URL must be set in production mode "
                "(the embedded SQLite default is for development)"
            )
        return self

    @model_validator(mode="after")
    def _production_needs_encryption_key(self) -> Self:
        if self.mode is Mode.production and self.encryption_key is None:
            raise ValueError(
                "KEYSERVICE_ENCRYPTION_KEY must be set in production mode: it encrypts webhook "
                "signing secrets (generate one with `keyservice encryption-key`)"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> Self:
        if self.webhook_claim_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError(
                "KEYSERVICE_WEBHOOK_CLAIM_LEASE_SECONDS must be longer than "
                "KEYSERVICE_WEBHOOK_TIMEOUT_SECONDS: a claim must outlast its attempt"
            )
        if any(delay < 0 for delay in self.webhook_retry_schedule):
            raise ValueError("KEYSERVICE_WEBHOOK_RETRY_SCHEDULE: delays are never negative")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or SQLITE_DEFAULT_URL

    @property
    def json_logs(self) -> bool:
        if self.log_format is not None:
            return self.log_format is LogFormat.json
        return self.mode is Mode.production

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


class SettingsError(Exception):
    """The environment's settings are not valid. The message has a line per problem, each
    naming its variable; it quotes no value that was read (a database URL holds a password)."""


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        ctx = problem.get("ctx") or {}
        # A validator's own words, without pydantic's "Value error, " in front of them.
        if problem["type"] == "value_error":
            message = str(ctx["error"])
        else:
            message = problem["msg"][:1].lower() + problem["msg"][1:]
        loc = problem.get("loc", ())
        lines.append(f"{ENV_PREFIX}{str(loc[0]).upper()}: {message}" if loc else message)
    return "\n".join(lines)


def load_settings() -> Settings:
    """The settings from the environment; ``SettingsError`` saying what is wrong otherwise."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()


async def _app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_app_settings)]

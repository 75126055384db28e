"""keyservice's resources as typed, immutable dataclasses, and the small parser that builds them.

Each model names the schema of ``openapi/openapi.json`` it mirrors in ``__schema__``; the
client's tests check every field against that document (names, types, nullability, enums), so
the models cannot drift from the server. Ids are strings (UUIDs), times are timezone-aware
``datetime``s, lists are tuples.

Request models use ``UNSET`` for "not sent": an update changes only the fields given, and for the
limits ``None`` (sent as ``null``) means "inherit again".

Secrets (a new key, a session key, an invitation token, a password) are left out of ``repr``.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar, Union

from keyservice_client.errors import UnexpectedResponseError

Environment = Literal["live", "test"]
KeyKind = Literal["application", "personal", "session"]
KeyStatus = Literal["active", "revoked", "expired"]
Role = Literal["owner", "admin", "member"]
MembershipStatus = Literal["active", "invited"]
ExpiryPreset = Literal["30d", "90d", "180d", "never"]
Granularity = Literal["hour", "day"]
VerifyCode = Literal[
    "VALID",
    "MALFORMED",
    "NOT_FOUND",
    "REVOKED",
    "EXPIRED",
    "INSUFFICIENT_SCOPE",
    "ACCOUNT_REQUIRED",
    "ACCOUNT_FORBIDDEN",
    "RATE_LIMITED",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
]


class Unset(enum.Enum):
    """The type of ``UNSET``: a request field that is not sent at all."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET

# Fields filled by the client (from headers, or its cache), not read from the JSON body.
CLIENT_ONLY: Final[Mapping[str, Any]] = types.MappingProxyType({"client_only": True})


def _secret() -> Any:
    return field(repr=False)


# --- Shared ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """A token bucket: ``limit`` requests per ``period_seconds``, bursts of up to ``burst``
    (default: ``limit``). Used in requests and answers alike."""

    __schema__: ClassVar[str] = "RateLimit"

    limit: int
    period_seconds: int = 1
    burst: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertThresholds:
    """When usage raises a ``usage.threshold`` alert: on crossing each of ``quota_percents`` of
    the monthly quota, and on ``rate_limited_refusals`` refusals by the limits within an hour."""

    __schema__: ClassVar[str] = "AlertThresholds"

    quota_percents: tuple[int, ...]
    rate_limited_refusals: int


T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Page(Generic[T]):
    """One page of a list, newest first; ``next_cursor`` is ``None`` on the last page."""

    data: tuple[T, ...]
    next_cursor: str | None


# --- Account, users, members, sessions -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    __schema__: ClassVar[str] = "AccountOut"

    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    alert_quota_percents: tuple[int, ...] | None
    alert_rate_limited_refusals: int | None
    alert_thresholds: AlertThresholds
    alert_emails_to_admins: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountMembership:
    __schema__: ClassVar[str] = "AccountMembership"

    account_id: str
    name: str
    role: Role
    status: MembershipStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    __schema__: ClassVar[str] = "UserOut"

    id: str
    email: str
    accounts: tuple[AccountMembership, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A console session: ``key`` carries the user's rights; it is shown only here."""

    __schema__: ClassVar[str] = "SessionCreated"

    key: str = _secret()
    expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    __schema__: ClassVar[str] = "MemberOut"

    user_id: str
    email: str
    role: Role
    status: MembershipStatus
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AddedMember(Member):
    """A new member. For an email that already had a user, ``status`` is ``invited`` and
    ``invitation_token`` is what that person accepts the invitation with (shown only here)."""

    __schema__: ClassVar[str] = "MemberAdded"

    invitation_token: str | None = _secret()


# --- Applications and keys -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    __schema__: ClassVar[str] = "ApplicationOut"

    id: str
    name: str
    developer_email: str
    description: str
    permissions: tuple[str, ...]
    rate_limit: RateLimit | None
    monthly_quota: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    """A key's metadata; its secret is never readable again after create or rotate."""

    __schema__: ClassVar[str] = "KeyOut"

    id: str
    kind: KeyKind
    name: str
    hint: str
    environment: Environment
    scopes: tuple[str, ...]
    status: KeyStatus
    application_id: str | None
    user_id: str | None
    created_at: datetime
    updated_at: datetime
    last_rotated_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit: RateLimit | None
    monthly_quota: int | None
    alert_quota_percents: tuple[int, ...] | None
    alert_rate_limited_refusals: int | None
    alert_thresholds: AlertThresholds


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedKey(Key):
    """A new (or rotated) key with its secret in ``key``: the only time it is ever shown."""

    __schema__: ClassVar[str] = "KeyCreated"

    key: str = _secret()


# --- Audit trail and events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    __schema__: ClassVar[str] = "AuditEventOut"

    id: str
    action: str
    target_type: str
    target_id: str
    actor_key_id: str | None
    actor_user_id: str | None
    client_address: str | None
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    __schema__: ClassVar[str] = "EventOut"

    id: str
    type: str
    key_id: str | None
    data: dict[str, Any]
    created_at: datetime


# --- Usage -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    """Requests allowed and refused; ``rate_limited`` is the part of ``refused`` that the
    key's limits refused."""

    __schema__: ClassVar[str] = "Counts"

    allowed: int
    refused: int
    rate_limited: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointCounts(Counts):
    __schema__: ClassVar[str] = "EndpointCounts"

    endpoint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCounts(Counts):
    __schema__: ClassVar[str] = "KeyCounts"

    key_id: str
    name: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Point(Counts):
    __schema__: ClassVar[str] = "Point"

    start: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    __schema__: ClassVar[str] = "Series"

    granularity: Granularity
    start: datetime
    end: datetime
    points: tuple[Point, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    __schema__: ClassVar[str] = "Limits"

    rate_limit: RateLimit | None
    monthly_quota: int | None
    quota_remaining: int | None
    quota_resets_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyUsage:
    __schema__: ClassVar[str] = "KeyUsage"

    key_id: str
    current_hour: Counts
    current_month: Counts
    series: Series
    top_endpoints: tuple[EndpointCounts, ...]
    limits: Limits
    alert_thresholds: AlertThresholds


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUsage:
    __schema__: ClassVar[str] = "AccountUsage"

    current_hour: Counts
    current_month: Counts
    series: Series
    top_endpoints: tuple[EndpointCounts, ...]
    top_keys: tuple[KeyCounts, ...]
    alert_thresholds: AlertThresholds


@dataclass(frozen=True, slots=True, kw_only=True)
class Scopes:
    """The deployment's catalogue: the product's scopes and keyservice's own."""

    __schema__: ClassVar[str] = "Scopes"

    product: tuple[str, ...]
    keyservice: tuple[str, ...]


# --- Verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedKey:
    """A valid key's identity and its rights on the account it acts on."""

    __schema__: ClassVar[str] = "VerifiedKey"

    id: str
    name: str
    kind: KeyKind
    environment: Environment
    account_id: str
    application_id: str | None
    user_id: str | None
    role: Role | None
    scopes: tuple[str, ...]
    expires_at: datetime | None
    rotated: bool
    rotated_secret_expires_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitState:
    """A limited key's limits and where it stands: the numbers of the rate-limit headers."""

    __schema__: ClassVar[str] = "RateLimitState"

    limit: int | None
    period_seconds: int | None
    burst: int | None
    remaining: int | None
    reset_seconds: int | None
    retry_after: int | None
    monthly_quota: int | None
    quota_remaining: int | None
    quota_reset_seconds: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """``/v1/verify``'s answer. ``valid`` is the verdict and ``code`` the reason.

    ``UNAVAILABLE`` (keyservice's database is unreachable and the key was not one it had
    verified before) is a verdict too, with ``valid`` false: a service that lets only valid
    keys through fails closed. ``retry_after`` then says when to ask again.

    Filled by the client: ``retry_after`` (the ``Retry-After`` header), ``rate_limit_headers``
    (``RateLimit-Policy``, ``RateLimit``, ``X-RateLimit-*`` and ``Retry-After``, to pass on to
    the caller as they are) and ``cached`` (answered from the client's verify cache).
    """

    __schema__: ClassVar[str] = "VerifyResponse"

    valid: bool
    code: VerifyCode
    detail: str | None = None
    key: VerifiedKey | None = None
    rate_limit: RateLimitState | None = None
    retry_after: int | None = field(default=None, metadata=CLIENT_ONLY)
    rate_limit_headers: Mapping[str, str] = field(default_factory=dict, metadata=CLIENT_ONLY)
    cached: bool = field(default=False, metadata=CLIENT_ONLY)


# --- Requests --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationCreate:
    __schema__: ClassVar[str] = "ApplicationCreate"

    name: str
    developer_email: str
    description: str | Unset = UNSET
    permissions: tuple[str, ...] | Unset = UNSET
    rate_limit: RateLimit | Unset | None = UNSET
    monthly_quota: int | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationUpdate:
    __schema__: ClassVar[str] = "ApplicationUpdate"

    name: str | Unset = UNSET
    developer_email: str | Unset = UNSET
    description: str | Unset = UNSET
    permissions: tuple[str, ...] | Unset = UNSET
    rate_limit: RateLimit | Unset | None = UNSET
    monthly_quota: int | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCreate:
    __schema__: ClassVar[str] = "KeyCreate"

    name: str
    scopes: tuple[str, ...]
    environment: Environment | Unset = UNSET
    expires_in: ExpiryPreset | Unset = UNSET
    expires_at: datetime | Unset = UNSET
    rate_limit: RateLimit | Unset | None = UNSET
    monthly_quota: int | Unset | None = UNSET
    alert_quota_percents: tuple[int, ...] | Unset | None = UNSET
    alert_rate_limited_refusals: int | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonalKeyCreate:
    __schema__: ClassVar[str] = "PersonalKeyCreate"

    name: str
    scopes: tuple[str, ...]
    environment: Environment | Unset = UNSET
    expires_in: ExpiryPreset | Unset = UNSET
    expires_at: datetime | Unset = UNSET
    rate_limit: RateLimit | Unset | None = UNSET
    monthly_quota: int | Unset | None = UNSET
    alert_quota_percents: tuple[int, ...] | Unset | None = UNSET
    alert_rate_limited_refusals: int | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyUpdate:
    __schema__: ClassVar[str] = "KeyUpdate"

    name: str | Unset = UNSET
    rate_limit: RateLimit | Unset | None = UNSET
    monthly_quota: int | Unset | None = UNSET
    alert_quota_percents: tuple[int, ...] | Unset | None = UNSET
    alert_rate_limited_refusals: int | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRotate:
    __schema__: ClassVar[str] = "KeyRotate"

    grace_period_seconds: int | Unset = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountUpdate:
    __schema__: ClassVar[str] = "AccountUpdate"

    name: str | Unset = UNSET
    alert_quota_percents: tuple[int, ...] | Unset | None = UNSET
    alert_rate_limited_refusals: int | Unset | None = UNSET
    alert_emails_to_admins: bool | Unset = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberCreate:
    __schema__: ClassVar[str] = "MemberCreate"

    email: str
    password: str | Unset = field(default=UNSET, repr=False)
    role: Role | Unset = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberUpdate:
    __schema__: ClassVar[str] = "MemberUpdate"

    role: Role


@dataclass(frozen=True, slots=True, kw_only=True)
class InvitationAccept:
    __schema__: ClassVar[str] = "InvitationAccept"

    token: str = _secret()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginRequest:
    __schema__: ClassVar[str] = "LoginRequest"

    email: str
    password: str = _secret()


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyRequest:
    __schema__: ClassVar[str] = "VerifyRequest"

    key: str = _secret()
    scopes: tuple[str, ...] | Unset = UNSET
    account_id: str | Unset = UNSET
    endpoint: str | Unset = UNSET
    cost: int | Unset = UNSET
    client_address: str | Unset = UNSET


# --- JSON in and out -------------------------------------------------------------------------

M = TypeVar("M")
_hints: dict[type[Any], dict[str, Any]] = {}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = _hints.get(cls)
    if hints is None:
        hints = _hints[cls] = typing.get_type_hints(cls)
    return hints


def parse(cls: type[M], data: object, where: str = "") -> M:
    """``data`` (decoded JSON) as a ``cls``. Members the model does not know are ignored, so
    that a newer server's additions do not break an older client; a missing or mistyped member
    raises ``UnexpectedResponseError``. Enumerations are not checked, for the same reason (a
    code added by a newer server reaches the caller as it is)."""
    where = where or getattr(cls, "__schema__", cls.__name__)
    if not isinstance(data, dict):
        raise UnexpectedResponseError(f"{where}: expected an object")
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.metadata.get("client_only"):
            continue
        if f.name in data:
            values[f.name] = _value(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UnexpectedResponseError(f"{where}: {f.name} is missing")
    return cls(**values)


def parse_page(item: type[M], data: object) -> Page[M]:
    where = f"Page[{getattr(item, '__schema__', item.__name__)}]"
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UnexpectedResponseError(f"{where}: expected an object with a data list")
    cursor = data.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise UnexpectedResponseError(f"{where}.next_cursor: expected a string")
    return Page(
        data=tuple(parse(item, row, f"{where}.data[{i}]") for i, row in enumerate(data["data"])),
        next_cursor=cursor,
    )


def _value(tp: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(options) < len(typing.get_args(tp)):
                return None
            raise UnexpectedResponseError(f"{where}: null where a value is required")
        [option] = options  # the models' unions are "X | None" only
        return _value(option, value, where)
    if origin is Literal or tp is str:
        if isinstance(value, str):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is datetime:
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
    elif origin is tuple:
        if isinstance(value, list):
            item = typing.get_args(tp)[0]
            return tuple(_value(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif dataclasses.is_dataclass(tp):
        return parse(typing.cast(type[Any], tp), value, where)
    raise UnexpectedResponseError(f"{where}: unexpected {type(value).__name__}")


def to_json(model: object) -> dict[str, Any]:
    """A request model as JSON: ``UNSET`` fields left out, times in ISO 8601."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(model):  # type: ignore[arg-type]
        value = getattr(model, f.name)
        if value is not UNSET:
            out[f.name] = _json_value(value)
    return out


def _json_value(value: object) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    return value

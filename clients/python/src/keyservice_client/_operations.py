"""Every call the client makes, written once for the async and the sync client.

An ``Operation`` is one route of the API document (method, path template, body and answer
models, the query parameters sent, whether repeating it is harmless); the builder functions below
turn a method's arguments into a ``Call`` of that operation. The clients only send calls, so the
set of ``OPERATIONS`` is all the client can do, and the tests check each against
``openapi/openapi.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from keyservice_client import models
from keyservice_client.models import (
    UNSET,
    Account,
    AccountMembership,
    AccountUpdate,
    AccountUsage,
    AddedMember,
    Application,
    ApplicationCreate,
    ApplicationUpdate,
    AuditEvent,
    CreatedKey,
    Environment,
    Event,
    ExpiryPreset,
    Granularity,
    InvitationAccept,
    Key,
    KeyCreate,
    KeyRotate,
    KeyStatus,
    KeyUpdate,
    KeyUsage,
    LoginRequest,
    Member,
    MemberCreate,
    MemberUpdate,
    Page,
    PersonalKeyCreate,
    RateLimit,
    Role,
    Scopes,
    Session,
    Unset,
    User,
    Verdict,
    VerifyRequest,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    # The answer's model (of each item, for a page), or None for an empty answer.
    response: type[Any] | None
    status: int = 200
    page: bool = False
    body: type[Any] | None = None
    query: tuple[str, ...] = ()
    # Safe to send again when the first attempt may have reached the server.
    idempotent: bool = False
    # Sends the client's own key (a login does not need one).
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    operation: Operation
    path: str
    parse: Callable[[object], T]
    params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    json: Mapping[str, Any] | None = None

    def with_cursor(self, cursor: str) -> Call[T]:
        return dataclasses.replace(self, params={**self.params, "cursor": cursor})


def _path(template: str, **ids: str) -> str:
    # Quoted whole: an id can never reach another path ("../keys").
    return template.format(**{name: quote(str(value), safe="") for name, value in ids.items()})


def _query(**values: object) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        params[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return params


def _call(
    operation: Operation,
    *,
    body: object = None,
    params: dict[str, str] | None = None,
    **ids: str,
) -> Call[Any]:
    """A call whose answer is one ``operation.response`` (or nothing)."""
    model = operation.response

    def parse(data: object) -> Any:
        return None if model is None else models.parse(model, data)

    json = models.to_json(body) if body is not None else None
    assert set(params or ()) <= set(operation.query), "a query parameter the operation lacks"
    return Call(operation, _path(operation.path, **ids), parse, params or {}, json)


def _page(operation: Operation, params: dict[str, str], **ids: str) -> Call[Page[Any]]:
    item = operation.response
    assert item is not None
    assert set(params) <= set(operation.query), "a query parameter the operation lacks"

    def parse(data: object) -> Page[Any]:
        return models.parse_page(item, data)

    return Call(operation, _path(operation.path, **ids), parse, params)


def _tuple(values: Sequence[str] | Unset) -> tuple[str, ...] | Unset:
    return values if isinstance(values, Unset) else tuple(values)


def _ints(values: Sequence[int] | Unset | None) -> tuple[int, ...] | Unset | None:
    return values if values is None or isinstance(values, Unset) else tuple(values)


# --- Account ---------------------------------------------------------------------------------

ACCOUNT_GET = Operation("GET", "/v1/account", Account, idempotent=True)
ACCOUNT_UPDATE = Operation("PATCH", "/v1/account", Account, body=AccountUpdate, idempotent=True)
ACCOUNT_USAGE = Operation(
    "GET", "/v1/usage", AccountUsage, query=("granularity", "start", "end"), idempotent=True
)
SCOPES_LIST = Operation("GET", "/v1/scopes", Scopes, idempotent=True)


def account_get() -> Call[Account]:
    """The account the client's key acts on."""
    return _call(ACCOUNT_GET)


def account_update(
    *,
    name: str | Unset = UNSET,
    alert_quota_percents: Sequence[int] | Unset | None = UNSET,
    alert_rate_limited_refusals: int | Unset | None = UNSET,
    alert_emails_to_admins: bool | Unset = UNSET,
) -> Call[Account]:
    """Rename the account, or change its alert settings: the thresholds of its keys that set
    none (``None`` inherits the deployment's), and whether alert emails also go to its owners
    and admins."""
    body = AccountUpdate(
        name=name,
        alert_quota_percents=_ints(alert_quota_percents),
        alert_rate_limited_refusals=alert_rate_limited_refusals,
        alert_emails_to_admins=alert_emails_to_admins,
    )
    return _call(ACCOUNT_UPDATE, body=body)


def account_usage(
    *,
    granularity: Granularity | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Call[AccountUsage]:
    """The whole account's usage: this hour, this month, a series by ``hour`` (up to 31 days)
    or ``day`` (up to 366), the busiest endpoints and keys."""
    params = _query(granularity=granularity, start=start, end=end)
    return _call(ACCOUNT_USAGE, params=params)


def scopes_list() -> Call[Scopes]:
    """The deployment's scope catalogue: the product's scopes and keyservice's own."""
    return _call(SCOPES_LIST)


# --- Members ---------------------------------------------------------------------------------

MEMBERS_LIST = Operation(
    "GET", "/v1/account/members", Member, page=True, query=("limit", "cursor"), idempotent=True
)
MEMBERS_ADD = Operation("POST", "/v1/account/members", AddedMember, status=201, body=MemberCreate)
MEMBERS_GET = Operation("GET", "/v1/account/members/{user_id}", Member, idempotent=True)
MEMBERS_UPDATE = Operation(
    "PATCH", "/v1/account/members/{user_id}", Member, body=MemberUpdate, idempotent=True
)
MEMBERS_REMOVE = Operation(
    "DELETE", "/v1/account/members/{user_id}", None, status=204, idempotent=True
)


def members_list(*, limit: int | None = None, cursor: str | None = None) -> Call[Page[Member]]:
    """The account's members, a page at a time (``limit`` per page, at most 100)."""
    return _page(MEMBERS_LIST, _query(limit=limit, cursor=cursor))


def members_add(
    *, email: str, role: Role | Unset = UNSET, password: str | Unset = UNSET
) -> Call[AddedMember]:
    """Add a member. An email without a user creates it (with ``password``) and it joins at
    once; an email that has a user is only invited: hand them ``invitation_token``."""
    body = MemberCreate(email=email, role=role, password=password)
    return _call(MEMBERS_ADD, body=body)


def members_get(user_id: str) -> Call[Member]:
    return _call(MEMBERS_GET, user_id=user_id)


def members_update(user_id: str, *, role: Role) -> Call[Member]:
    """Change a member's role (only an owner grants ``owner``)."""
    return _call(MEMBERS_UPDATE, body=MemberUpdate(role=role), user_id=user_id)


def members_remove(user_id: str) -> Call[None]:
    """Remove a member from the account (the last owner cannot leave)."""
    return _call(MEMBERS_REMOVE, user_id=user_id)


# --- Applications ----------------------------------------------------------------------------

APPLICATIONS_LIST = Operation(
    "GET", "/v1/applications", Application, page=True, query=("limit", "cursor"), idempotent=True
)
APPLICATIONS_CREATE = Operation(
    "POST", "/v1/applications", Application, status=201, body=ApplicationCreate
)
APPLICATIONS_GET = Operation(
    "GET", "/v1/applications/{application_id}", Application, idempotent=True
)
APPLICATIONS_UPDATE = Operation(
    "PATCH",
    "/v1/applications/{application_id}",
    Application,
    body=ApplicationUpdate,
    idempotent=True,
)
APPLICATIONS_DELETE = Operation(
    "DELETE", "/v1/applications/{application_id}", None, status=204, idempotent=True
)


def applications_list(
    *, limit: int | None = None, cursor: str | None = None
) -> Call[Page[Application]]:
    """The account's applications, a page at a time (``limit`` per page, at most 100)."""
    return _page(APPLICATIONS_LIST, _query(limit=limit, cursor=cursor))


def applications_create(
    *,
    name: str,
    developer_email: str,
    description: str | Unset = UNSET,
    permissions: Sequence[str] | Unset = UNSET,
    rate_limit: RateLimit | Unset | None = UNSET,
    monthly_quota: int | Unset | None = UNSET,
) -> Call[Application]:
    """Create an application: one per integration. ``permissions`` bound the scopes its keys
    may hold."""
    body = ApplicationCreate(
        name=name,
        developer_email=developer_email,
        description=description,
        permissions=_tuple(permissions),
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
    )
    return _call(APPLICATIONS_CREATE, body=body)


def applications_get(application_id: str) -> Call[Application]:
    return _call(APPLICATIONS_GET, application_id=application_id)


def applications_update(
    application_id: str,
    *,
    name: str | Unset = UNSET,
    developer_email: str | Unset = UNSET,
    description: str | Unset = UNSET,
    permissions: Sequence[str] | Unset = UNSET,
    rate_limit: RateLimit | Unset | None = UNSET,
    monthly_quota: int | Unset | None = UNSET,
) -> Call[Application]:
    """Change the fields given. Narrowing ``permissions`` narrows existing keys at once; a
    limit set to ``None`` inherits the deployment's again."""
    body = ApplicationUpdate(
        name=name,
        developer_email=developer_email,
        description=description,
        permissions=_tuple(permissions),
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
    )
    return _call(APPLICATIONS_UPDATE, body=body, application_id=application_id)


def applications_delete(application_id: str) -> Call[None]:
    """Delete an application and its keys."""
    return _call(APPLICATIONS_DELETE, application_id=application_id)


# --- Keys ------------------------------------------------------------------------------------

KEYS_CREATE = Operation(
    "POST", "/v1/applications/{application_id}/keys", CreatedKey, status=201, body=KeyCreate
)
KEYS_LIST = Operation(
    "GET",
    "/v1/keys",
    Key,
    page=True,
    query=("environment", "status", "application_id", "limit", "cursor"),
    idempotent=True,
)
KEYS_GET = Operation("GET", "/v1/keys/{key_id}", Key, idempotent=True)
KEYS_UPDATE = Operation("PATCH", "/v1/keys/{key_id}", Key, body=KeyUpdate, idempotent=True)
# Revoking a revoked key is documented as a no-op that answers the same.
KEYS_REVOKE = Operation("POST", "/v1/keys/{key_id}/revoke", Key, idempotent=True)
KEYS_ROTATE = Operation("POST", "/v1/keys/{key_id}/rotate", CreatedKey, body=KeyRotate)
KEYS_USAGE = Operation(
    "GET",
    "/v1/keys/{key_id}/usage",
    KeyUsage,
    query=("granularity", "start", "end"),
    idempotent=True,
)


def keys_create(
    application_id: str,
    *,
    name: str,
    scopes: Sequence[str],
    environment: Environment | Unset = UNSET,
    expires_in: ExpiryPreset | Unset = UNSET,
    expires_at: datetime | Unset = UNSET,
    rate_limit: RateLimit | Unset | None = UNSET,
    monthly_quota: int | Unset | None = UNSET,
    alert_quota_percents: Sequence[int] | Unset | None = UNSET,
    alert_rate_limited_refusals: int | Unset | None = UNSET,
) -> Call[CreatedKey]:
    """Issue a key for an application. Its secret is in the answer's ``key``, and nowhere
    else, ever. Expiry: ``expires_in`` (``30d``, ``90d``, ``180d``, ``never``) or an explicit,
    timezone-aware ``expires_at``."""
    body = KeyCreate(
        name=name,
        scopes=tuple(scopes),
        environment=environment,
        expires_in=expires_in,
        expires_at=expires_at,
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
        alert_quota_percents=_ints(alert_quota_percents),
        alert_rate_limited_refusals=alert_rate_limited_refusals,
    )
    return _call(KEYS_CREATE, body=body, application_id=application_id)


def keys_list(
    *,
    application_id: str | None = None,
    environment: Environment | None = None,
    status: KeyStatus | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[Key]]:
    """The account's application keys, newest first, a page at a time."""
    params = _query(
        application_id=application_id,
        environment=environment,
        status=status,
        limit=limit,
        cursor=cursor,
    )
    return _page(KEYS_LIST, params)


def keys_get(key_id: str) -> Call[Key]:
    return _call(KEYS_GET, key_id=key_id)


def keys_update(
    key_id: str,
    *,
    name: str | Unset = UNSET,
    rate_limit: RateLimit | Unset | None = UNSET,
    monthly_quota: int | Unset | None = UNSET,
    alert_quota_percents: Sequence[int] | Unset | None = UNSET,
    alert_rate_limited_refusals: int | Unset | None = UNSET,
) -> Call[Key]:
    """Rename a key or change its limits or alert thresholds (``None`` inherits the
    application's or account's again)."""
    body = KeyUpdate(
        name=name,
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
        alert_quota_percents=_ints(alert_quota_percents),
        alert_rate_limited_refusals=alert_rate_limited_refusals,
    )
    return _call(KEYS_UPDATE, body=body, key_id=key_id)


def keys_revoke(key_id: str) -> Call[Key]:
    """Revoke a key, at once and everywhere. Irreversible."""
    return _call(KEYS_REVOKE, key_id=key_id)


def keys_rotate(key_id: str, *, grace_period_seconds: int | Unset = UNSET) -> Call[CreatedKey]:
    """A new secret for the same key (in the answer's ``key``). The old one stops at once, or
    after ``grace_period_seconds`` (up to 7 days). Irreversible."""
    body = KeyRotate(grace_period_seconds=grace_period_seconds)
    return _call(KEYS_ROTATE, body=body, key_id=key_id)


def keys_usage(
    key_id: str,
    *,
    granularity: Granularity | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Call[KeyUsage]:
    """A key's usage: this hour and month, a series, its busiest endpoints, its limits and
    alert thresholds."""
    params = _query(granularity=granularity, start=start, end=end)
    return _call(KEYS_USAGE, params=params, key_id=key_id)


# --- The calling user, personal keys, sessions -----------------------------------------------

USERS_ME = Operation("GET", "/v1/users/me", User, idempotent=True)
INVITATIONS_ACCEPT = Operation(
    "POST", "/v1/users/me/invitations/accept", AccountMembership, body=InvitationAccept
)
PERSONAL_KEYS_CREATE = Operation(
    "POST", "/v1/users/me/keys", CreatedKey, status=201, body=PersonalKeyCreate
)
PERSONAL_KEYS_LIST = Operation(
    "GET",
    "/v1/users/me/keys",
    Key,
    page=True,
    query=("environment", "status", "limit", "cursor"),
    idempotent=True,
)
PERSONAL_KEYS_GET = Operation("GET", "/v1/users/me/keys/{key_id}", Key, idempotent=True)
PERSONAL_KEYS_UPDATE = Operation(
    "PATCH", "/v1/users/me/keys/{key_id}", Key, body=KeyUpdate, idempotent=True
)
PERSONAL_KEYS_REVOKE = Operation("POST", "/v1/users/me/keys/{key_id}/revoke", Key, idempotent=True)
PERSONAL_KEYS_ROTATE = Operation(
    "POST", "/v1/users/me/keys/{key_id}/rotate", CreatedKey, body=KeyRotate
)
SESSIONS_CREATE = Operation(
    "POST", "/v1/sessions", Session, status=201, body=LoginRequest, authenticated=False
)
SESSIONS_END = Operation("DELETE", "/v1/sessions/current", None, status=204)


def users_me() -> Call[User]:
    """The user whose key the client holds, and their accounts."""
    return _call(USERS_ME)


def invitations_accept(token: str) -> Call[AccountMembership]:
    """Accept an invitation to an account, with the token its admin handed over."""
    return _call(INVITATIONS_ACCEPT, body=InvitationAccept(token=token))


def personal_keys_create(
    *,
    name: str,
    scopes: Sequence[str],
    environment: Environment | Unset = UNSET,
    expires_in: ExpiryPreset | Unset = UNSET,
    expires_at: datetime | Unset = UNSET,
    rate_limit: RateLimit | Unset | None = UNSET,
    monthly_quota: int | Unset | None = UNSET,
    alert_quota_percents: Sequence[int] | Unset | None = UNSET,
    alert_rate_limited_refusals: int | Unset | None = UNSET,
) -> Call[CreatedKey]:
    """Issue a personal key for the calling user: the user's rights in each of their accounts,
    within ``scopes``. Its secret is in the answer's ``key`` only."""
    body = PersonalKeyCreate(
        name=name,
        scopes=tuple(scopes),
        environment=environment,
        expires_in=expires_in,
        expires_at=expires_at,
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
        alert_quota_percents=_ints(alert_quota_percents),
        alert_rate_limited_refusals=alert_rate_limited_refusals,
    )
    return _call(PERSONAL_KEYS_CREATE, body=body)


def personal_keys_list(
    *,
    environment: Environment | None = None,
    status: KeyStatus | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[Key]]:
    """The calling user's personal keys, newest first, a page at a time."""
    params = _query(environment=environment, status=status, limit=limit, cursor=cursor)
    return _page(PERSONAL_KEYS_LIST, params)


def personal_keys_get(key_id: str) -> Call[Key]:
    return _call(PERSONAL_KEYS_GET, key_id=key_id)


def personal_keys_update(
    key_id: str,
    *,
    name: str | Unset = UNSET,
    rate_limit: RateLimit | Unset | None = UNSET,
    monthly_quota: int | Unset | None = UNSET,
    alert_quota_percents: Sequence[int] | Unset | None = UNSET,
    alert_rate_limited_refusals: int | Unset | None = UNSET,
) -> Call[Key]:
    body = KeyUpdate(
        name=name,
        rate_limit=rate_limit,
        monthly_quota=monthly_quota,
        alert_quota_percents=_ints(alert_quota_percents),
        alert_rate_limited_refusals=alert_rate_limited_refusals,
    )
    return _call(PERSONAL_KEYS_UPDATE, body=body, key_id=key_id)


def personal_keys_revoke(key_id: str) -> Call[Key]:
    return _call(PERSONAL_KEYS_REVOKE, key_id=key_id)


def personal_keys_rotate(
    key_id: str, *, grace_period_seconds: int | Unset = UNSET
) -> Call[CreatedKey]:
    body = KeyRotate(grace_period_seconds=grace_period_seconds)
    return _call(PERSONAL_KEYS_ROTATE, body=body, key_id=key_id)


def sessions_create(*, email: str, password: str) -> Call[Session]:
    """Log in with email and password: a short-lived session key with the user's rights."""
    return _call(SESSIONS_CREATE, body=LoginRequest(email=email, password=password))


def sessions_end() -> Call[None]:
    """End the session whose key the client holds."""
    return _call(SESSIONS_END)


# --- Audit trail and events ------------------------------------------------------------------

AUDIT_EVENTS_LIST = Operation(
    "GET",
    "/v1/audit-events",
    AuditEvent,
    page=True,
    query=("action", "limit", "cursor"),
    idempotent=True,
)
EVENTS_LIST = Operation(
    "GET",
    "/v1/events",
    Event,
    page=True,
    query=("type", "key_id", "limit", "cursor"),
    idempotent=True,
)


def audit_events_list(
    *, action: str | None = None, limit: int | None = None, cursor: str | None = None
) -> Call[Page[AuditEvent]]:
    """The account's audit trail, newest first: who changed what, when, from where."""
    return _page(AUDIT_EVENTS_LIST, _query(action=action, limit=limit, cursor=cursor))


def events_list(
    *,
    type: str | None = None,
    key_id: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> Call[Page[Event]]:
    """The account's events (``usage.threshold``, ...), newest first."""
    params = _query(type=type, key_id=key_id, limit=limit, cursor=cursor)
    return _page(EVENTS_LIST, params)


# --- Verification ----------------------------------------------------------------------------

VERIFY = Operation("POST", "/v1/verify", Verdict, body=VerifyRequest)
# The guard's forward-auth mode; the answer is its status and headers.
FORWARD_AUTH = Operation(
    "GET", "/v1/forward-auth", None, query=("scopes",), idempotent=True, authenticated=False
)


def verify_request(
    key: str,
    *,
    scopes: Sequence[str] = (),
    endpoint: str | None = None,
    cost: int | None = None,
    account_id: str | None = None,
    client_address: str | None = None,
) -> VerifyRequest:
    return VerifyRequest(
        key=key,
        scopes=tuple(scopes) if scopes else UNSET,
        endpoint=UNSET if endpoint is None else endpoint,
        cost=UNSET if cost is None else cost,
        account_id=UNSET if account_id is None else account_id,
        client_address=UNSET if client_address is None else client_address,
    )


# Webhooks (endpoints, subscriptions, test events) are not in the API yet; their operations
# will go here, and a `webhooks` resource beside the others in client.py.

OPERATIONS: tuple[Operation, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Operation)
)

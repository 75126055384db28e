"""Key lookup and checks: the one code path behind keyservice's own API and, later, ``/verify``.

``lookup`` turns a key hash into a ``KeyRecord``, an immutable snapshot of everything verification
needs (so that it can be cached), and ``authenticate`` checks it against the presented secret and
the clock. ``resolve`` then picks the account the request acts on and the rights the key has there.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, String, Uuid, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice import scopes as scope_rules
from keyservice.config import Settings
from keyservice.errors import (
    AccountForbidden,
    AccountRequired,
    ExpiredKey,
    InsufficientRole,
    InsufficientScope,
    RevokedKey,
    UnknownKey,
)
from keyservice.json_rows import JsonRows
from keyservice.models import Account, ApiKey, Application, KeyKind, Membership, Role
from keyservice.ratelimit.limiter import Decision
from keyservice.ratelimit.policy import (
    AlertThresholds,
    Limits,
    effective_alert_thresholds,
    effective_limits,
)
from keyservice.security import Environment

NO_LIMITS = Limits(rate=None, monthly_quota=None)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What verification knows of a key; immutable, so it can be shared from a cache."""

    id: uuid.UUID
    kind: KeyKind
    name: str
    environment: Environment
    account_id: uuid.UUID | None
    application_id: uuid.UUID | None
    user_id: uuid.UUID | None
    # The key's scopes as its application's permissions allow them today.
    scopes: frozenset[str]
    key_hash: str
    expires_at: datetime | None
    revoked_at: datetime | None
    previous_hash: str | None
    previous_expires_at: datetime | None
    # For a user's key: the user's role in each account, and its scopes there (worked out once,
    # here, rather than on every request).
    roles: Mapping[uuid.UUID, Role] = field(default_factory=dict)
    account_scopes: Mapping[uuid.UUID, frozenset[str]] = field(default_factory=dict)
    limits: Limits = NO_LIMITS
    # The thresholds of its usage alerts in each account it reaches (the key's own, else the
    # account's, else the deployment's): carried here so that a request costs no query for them.
    alerts: Mapping[uuid.UUID, AlertThresholds] = field(default_factory=dict)
    # What /verify answers about this key, rendered once per account and secret (see
    # ``keyservice.verification.router.valid_content``): the record never changes, nor do they.
    views: dict[tuple[uuid.UUID, bool], bytes] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    """A verified user's key acting on the user's own things (their personal keys, sessions)."""

    key: KeyRecord
    user_id: uuid.UUID
    client_address: str | None = None
    # A user's own things belong to no one account (the audit trail records their changes in
    # each account the user has joined).
    account_id: None = None

    @property
    def scopes(self) -> frozenset[str]:
        return self.key.scopes

    def require(self, *required: str) -> None:
        for scope in required:
            if not scope_rules.covers(self.key.scopes, scope):
                raise InsufficientScope(f"The key lacks the scope {scope!r}", scope=scope)


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified key acting on one account."""

    key: KeyRecord
    account_id: uuid.UUID
    # The user's role there, for a user's key; None for an application's key.
    role: Role | None
    scopes: frozenset[str]
    client_address: str | None = None

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.key.user_id

    def allows(self, scope: str) -> bool:
        return scope_rules.covers(self.scopes, scope)

    def require(self, *required: str) -> None:
        for scope in required:
            if self.allows(scope):
                continue
            if self.role is not None and scope_rules.covers(self.key.scopes, scope):
                raise InsufficientRole(
                    f"The {self.role.value} role does not allow {scope!r}",
                    scope=scope,
                    role=self.role.value,
                )
            raise InsufficientScope(f"The key lacks the scope {scope!r}", scope=scope)


# Keys looked up in one statement; more wait for the next.
MAX_LOOKUPS = 500


@functools.cache
def _presented(dialect: str) -> JsonRows:
    return JsonRows(dialect, {"hash": String}, name="presented", param="hashes")


@functools.cache
def _lookup_statement(dialect: str) -> Select[str, ApiKey, Application | None, Account | None]:
    """The keys whose current or previous (rotation grace) secret has one of the presented
    hashes, with their applications and accounts: fixed, whatever the number of hashes."""
    presented = _presented(dialect).table()
    return (
        select(presented.c.hash, ApiKey, Application, Account)
        .select_from(presented)
        .join(
            ApiKey,
            or_(ApiKey.key_hash == presented.c.hash, ApiKey.previous_hash == presented.c.hash),
        )
        .outerjoin(Application, Application.id == ApiKey.application_id)
        .outerjoin(Account, Account.id == ApiKey.account_id)
    )


@functools.cache
def _users(dialect: str) -> JsonRows:
    return JsonRows(dialect, {"user_id": Uuid}, name="users", param="users")


@functools.cache
def _memberships_statement(dialect: str) -> Select[uuid.UUID, Role, Account]:
    """The accepted memberships of the users, with their accounts, whatever their number."""
    users = _users(dialect).table()
    return (
        select(Membership.user_id, Membership.role, Account)
        .join(Account, Account.id == Membership.account_id)
        .where(Membership.user_id.in_(select(users.c.user_id)), Membership.accepted_at.is_not(None))
    )


async def lookup(
    session: AsyncSession, key_hashes: Sequence[str], settings: Settings
) -> dict[str, KeyRecord]:
    """The records of the keys presented with ``key_hashes`` (at most ``MAX_LOOKUPS``): one
    indexed SELECT for them all, plus one for the memberships of the users among them. A hash
    of no key is not in the answer."""
    dialect = session.get_bind().dialect.name
    rows = (
        await session.execute(
            _lookup_statement(dialect), _presented(dialect).bind((h,) for h in key_hashes)
        )
    ).all()
    user_ids = {key.user_id for _, key, _, _ in rows if key.user_id is not None}
    roles: dict[uuid.UUID | None, dict[uuid.UUID, Role]] = {}
    accounts: dict[uuid.UUID | None, list[Account]] = {}
    if user_ids:
        memberships = await session.execute(
            _memberships_statement(dialect), _users(dialect).bind((u,) for u in user_ids)
        )
        for user_id, role, account in memberships.all():
            roles.setdefault(user_id, {})[account.id] = role
            accounts.setdefault(user_id, []).append(account)
    catalogue = scope_rules.catalogue(settings.scopes)
    return {
        key_hash: _record(
            key,
            application,
            roles.get(key.user_id, {}),
            [account] if account is not None else accounts.get(key.user_id, []),
            catalogue,
            settings,
        )
        for key_hash, key, application, account in rows
    }


def _record(
    key: ApiKey,
    application: Application | None,
    roles: dict[uuid.UUID, Role],
    accounts: list[Account],
    catalogue: tuple[str, ...],
    settings: Settings,
) -> KeyRecord:
    scopes = frozenset(key.scopes)
    if application is not None:
        scopes = scope_rules.intersect(scopes, application.permissions)
    return KeyRecord(
        id=key.id,
        kind=key.kind,
        name=key.name,
        environment=key.environment,
        account_id=key.account_id,
        application_id=key.application_id,
        user_id=key.user_id,
        scopes=scopes,
        key_hash=key.key_hash,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        previous_hash=key.previous_hash,
        previous_expires_at=key.previous_expires_at,
        roles=dict(roles),
        account_scopes={
            account_id: scope_rules.role_scopes(role, scopes, catalogue)
            for account_id, role in roles.items()
        },
        limits=effective_limits(settings, key, application),
        alerts={
            account.id: effective_alert_thresholds(settings, key, account) for account in accounts
        },
    )


def authenticate(record: KeyRecord, presented_hash: str, now: datetime) -> bool:
    """Raise unless the key is usable now; return whether it is a rotated secret in its grace."""
    if record.revoked_at is not None:
        raise RevokedKey()
    if record.expires_at is not None and record.expires_at <= now:
        raise ExpiredKey()
    if presented_hash == record.key_hash:
        return False
    if record.previous_expires_at is not None and now < record.previous_expires_at:
        return True
    # A rotated-out secret past its grace period is simply not a key any more.
    raise UnknownKey()


def resolve(
    record: KeyRecord,
    *,
    account_id: uuid.UUID | None,
    client_address: str | None = None,
) -> Principal:
    """Pick the account the request acts on, and the key's rights there."""
    if record.account_id is not None:
        if account_id is not None and account_id != record.account_id:
            raise AccountForbidden()
        return Principal(
            key=record,
            account_id=record.account_id,
            role=None,
            scopes=record.scopes,
            client_address=client_address,
        )
    if account_id is None:
        if len(record.roles) != 1:
            if not record.roles:
                raise AccountForbidden("The key's user belongs to no account")
            raise AccountRequired(
                "The key's user belongs to several accounts: name one with account_id"
            )
        (account_id,) = record.roles
    role = record.roles.get(account_id)
    if role is None:
        raise AccountForbidden()
    return Principal(
        key=record,
        account_id=account_id,
        role=role,
        scopes=record.account_scopes[account_id],
        client_address=client_address,
    )


@dataclass(frozen=True, slots=True)
class Verified:
    """A request's key, verified: who acts, on which account, within its limits."""

    principal: Principal
    # Whether the presented secret is the previous one of a rotated key, in its grace period.
    grace: bool
    # The rate limiter's verdict, for a key with limits.
    decision: Decision | None = None


# Who performs a change, for the audit trail and ownership checks.
Actor = Principal | UserPrincipal

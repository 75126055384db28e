"""Issuing, listing, renaming, rotating and revoking keys, of applications and of users."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice import scopes as scope_rules
from keyservice.applications import service as applications_service
from keyservice.audit import service as audit
from keyservice.config import Settings
from keyservice.errors import Conflict, Forbidden, NotFound
from keyservice.events import catalogue as event_types
from keyservice.events import service as events
from keyservice.invalidations import Target, invalidate
from keyservice.keys.schemas import KeyCreate, KeyUpdate
from keyservice.models import Account, ApiKey, Application, KeyKind, KeyStatus, utcnow
from keyservice.pagination import PageParams, paginate
from keyservice.ratelimit.policy import AlertThresholds, effective_alert_thresholds
from keyservice.ratelimit.schemas import RateLimit, limit_columns
from keyservice.security import Environment, generate_key, hash_key, key_hint
from keyservice.verification.service import Actor, Principal, UserPrincipal

# A key's own alert thresholds; null inherits (the account's, then the deployment's).
ALERT_COLUMNS = ("alert_quota_percents", "alert_rate_limited_refusals")


def new_key(
    *,
    prefix: str,
    kind: KeyKind,
    name: str,
    environment: Environment,
    scopes: Sequence[str],
    expires_at: datetime | None,
    account_id: uuid.UUID | None = None,
    application_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    created_by: Actor | None = None,
) -> tuple[ApiKey, str]:
    """A key row and its secret; the secret exists only in the caller's hands from here on."""
    secret = generate_key(prefix, environment)
    key = ApiKey(
        kind=kind,
        account_id=account_id,
        application_id=application_id,
        user_id=user_id,
        name=name,
        environment=environment,
        key_hash=hash_key(secret),
        hint=key_hint(secret),
        scopes=list(scopes),
        expires_at=expires_at,
        created_by_user_id=created_by.user_id if created_by else None,
        created_by_key_id=created_by.key.id if created_by else None,
    )
    return key, secret


def owner_key(*, prefix: str, user_id: uuid.UUID, name: str) -> tuple[ApiKey, str]:
    """A personal key with every keyservice scope: an account owner's way in (bootstrap, or a
    lost key issued again on the server)."""
    return new_key(
        prefix=prefix,
        kind=KeyKind.personal,
        name=name,
        environment=Environment.live,
        scopes=["keyservice:*"],
        expires_at=None,
        user_id=user_id,
    )


def created_details(key: ApiKey) -> dict[str, object]:
    """What the audit trail says of a new key."""
    return {
        "name": key.name,
        "kind": key.kind.value,
        "environment": key.environment.value,
        "scopes": key.scopes,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def check_issuable(actor: Actor, scopes: Sequence[str], environment: Environment) -> None:
    """No escalation: keyservice's own scopes only from a key that holds them, and a ``test``
    key (handled less carefully than live ones) issues only ``test`` keys."""
    scope_rules.check_grantable(actor.scopes, scopes)
    if actor.key.environment is Environment.test and environment is not Environment.test:
        raise Forbidden("A test key can only issue test keys")


async def record_event(
    session: AsyncSession, key: ApiKey, payload: type[event_types.KeyData], **fields: Any
) -> None:
    """Record an event about ``key`` (``payload`` with the key's ids and ``fields``) in the
    caller's transaction: in its account, or, for a personal key, in each account its user has
    joined (the accounts it reaches). A session key is a console's login, not a key anyone
    manages: it records none."""
    if key.kind is KeyKind.session:
        return
    data = payload(
        key_id=key.id,
        kind=key.kind.value,
        application_id=key.application_id,
        user_id=key.user_id,
        **fields,
    )
    if key.account_id is not None:
        await events.record(session, account_id=key.account_id, data=data, key_id=key.id)
    elif key.user_id is not None:
        await events.record_for_user(session, user_id=key.user_id, data=data, key_id=key.id)


async def record_created(session: AsyncSession, key: ApiKey) -> None:
    """``key.created`` for a new key, however it was issued."""
    await record_event(
        session,
        key,
        event_types.KeyCreatedData,
        name=key.name,
        hint=key.hint,
        environment=key.environment,
        scopes=key.scopes,
        expires_at=key.expires_at,
        rate_limit=RateLimit.of(key),
        monthly_quota=key.monthly_quota,
        alert_quota_percents=key.alert_quota_percents,
        alert_rate_limited_refusals=key.alert_rate_limited_refusals,
    )


async def _issue(
    session: AsyncSession, actor: Actor, key: ApiKey, *, details: dict[str, object]
) -> None:
    session.add(key)
    await session.flush()
    await audit.record(
        session,
        actor,
        action="key.created",
        target_type="api_key",
        target_id=key.id,
        details={**created_details(key), **details},
    )
    await record_created(session, key)


def _issued(
    data: KeyCreate,
    actor: Actor,
    *,
    kind: KeyKind,
    scopes: list[str],
    prefix: str,
    account_id: uuid.UUID | None = None,
    application_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> tuple[ApiKey, str]:
    key, secret = new_key(
        prefix=prefix,
        kind=kind,
        name=data.name,
        environment=data.environment,
        scopes=scopes,
        expires_at=data.expiry(utcnow()),
        account_id=account_id,
        application_id=application_id,
        user_id=user_id,
        created_by=actor,
    )
    for column, value in limit_columns(data.rate_limit).items():
        setattr(key, column, value)
    key.monthly_quota = data.monthly_quota
    key.alert_quota_percents = data.alert_quota_percents
    key.alert_rate_limited_refusals = data.alert_rate_limited_refusals
    return key, secret


async def create_application_key(
    session: AsyncSession,
    actor: Principal,
    application_id: uuid.UUID,
    data: KeyCreate,
    *,
    catalogue: tuple[str, ...],
    prefix: str,
) -> tuple[ApiKey, str]:
    application = await applications_service.get_application(
        session, account_id=actor.account_id, application_id=application_id
    )
    scopes = list(dict.fromkeys(data.scopes))
    scope_rules.check_in_catalogue(scopes, catalogue)
    scope_rules.check_within(scopes, application.permissions, what="the application's permissions")
    check_issuable(actor, scopes, data.environment)
    key, secret = _issued(
        data,
        actor,
        kind=KeyKind.application,
        scopes=scopes,
        prefix=prefix,
        account_id=actor.account_id,
        application_id=application.id,
    )
    await _issue(session, actor, key, details={"application_id": str(application.id)})
    return key, secret


async def create_personal_key(
    session: AsyncSession,
    actor: UserPrincipal,
    data: KeyCreate,
    *,
    catalogue: tuple[str, ...],
    prefix: str,
) -> tuple[ApiKey, str]:
    """A key of the calling user: its rights in each account are its scopes within the user's
    role there, so it never exceeds what the user may do."""
    scopes = list(dict.fromkeys(data.scopes))
    scope_rules.check_in_catalogue(scopes, catalogue)
    check_issuable(actor, scopes, data.environment)
    key, secret = _issued(
        data, actor, kind=KeyKind.personal, scopes=scopes, prefix=prefix, user_id=actor.user_id
    )
    await _issue(session, actor, key, details={})
    return key, secret


def _owned_by(actor: Actor) -> ColumnElement[bool]:
    """An account's application keys, or a user's own keys."""
    if isinstance(actor, UserPrincipal):
        return ApiKey.user_id == actor.user_id
    return ApiKey.account_id == actor.account_id


async def get_key(session: AsyncSession, actor: Actor, key_id: uuid.UUID) -> ApiKey:
    key = (
        await session.scalars(select(ApiKey).where(ApiKey.id == key_id, _owned_by(actor)))
    ).first()
    if key is None:
        raise NotFound("API key not found")
    return key


async def list_keys(
    session: AsyncSession,
    actor: Actor,
    *,
    page: PageParams,
    application_id: uuid.UUID | None = None,
    environment: Environment | None = None,
    status: KeyStatus | None = None,
    kind: KeyKind | None = None,
) -> tuple[Sequence[ApiKey], str | None]:
    statement = select(ApiKey).where(_owned_by(actor))
    if application_id is not None:
        statement = statement.where(ApiKey.application_id == application_id)
    if environment is not None:
        statement = statement.where(ApiKey.environment == environment)
    if kind is not None:
        statement = statement.where(ApiKey.kind == kind)
    if status is not None:
        now = utcnow()
        not_expired = or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
        if status is KeyStatus.active:
            statement = statement.where(ApiKey.revoked_at.is_(None), not_expired)
        elif status is KeyStatus.revoked:
            statement = statement.where(ApiKey.revoked_at.is_not(None))
        else:
            statement = statement.where(ApiKey.revoked_at.is_(None), ~not_expired)
    return await paginate(session, statement, page, created_at=ApiKey.created_at, id_=ApiKey.id)


async def update_key(
    session: AsyncSession, actor: Actor, key_id: uuid.UUID, data: KeyUpdate
) -> ApiKey:
    """Rename a key or change its limits or alert thresholds (an explicit null inherits
    again)."""
    key = await get_key(session, actor, key_id)
    rate_limit = RateLimit.of(key)
    changes: dict[str, object] = {}
    if data.name is not None:
        changes["name"] = data.name
    if "rate_limit" in data.model_fields_set:
        changes |= limit_columns(data.rate_limit)
    for column in ("monthly_quota", *ALERT_COLUMNS):
        if column in data.model_fields_set:
            changes[column] = getattr(data, column)
    changed = audit.apply_changes(key, changes)
    if changed:
        await session.flush()
        await invalidate(session, Target("key", key.id))
        await audit.record(
            session,
            actor,
            action="key.updated",
            target_type="api_key",
            target_id=key.id,
            details=changed,
        )
        await _record_updated(session, key, changed, rate_limit)
    return key


async def _record_updated(
    session: AsyncSession,
    key: ApiKey,
    changed: dict[str, dict[str, Any]],
    rate_limit: RateLimit | None,
) -> None:
    """``key.updated`` with the changed fields as the API names them (a rate limit is one
    field, not three columns)."""
    changes: dict[str, Any] = {}
    if "name" in changed:
        changes["name"] = event_types.change(changed["name"]["from"], key.name)
    if RateLimit.of(key) != rate_limit:
        changes["rate_limit"] = event_types.change(rate_limit, RateLimit.of(key))
    for column in ("monthly_quota", *ALERT_COLUMNS):
        if column in changed:
            changes[column] = event_types.change(changed[column]["from"], getattr(key, column))
    if changes:
        await record_event(
            session,
            key,
            event_types.KeyUpdatedData,
            changes=event_types.KeyChanges.model_validate(changes),
        )


async def revoke_key(session: AsyncSession, actor: Actor, key_id: uuid.UUID) -> ApiKey:
    """Revoke at once, everywhere. Revoking a revoked key changes nothing and records nothing."""
    now = utcnow()
    # One conditional UPDATE: of two concurrent revocations exactly one records the event.
    revoked = await session.scalar(
        update(ApiKey)
        .where(ApiKey.id == key_id, _owned_by(actor), ApiKey.revoked_at.is_(None))
        .values(revoked_at=now, updated_at=now)
        .returning(ApiKey.id)
    )
    key = await get_key(session, actor, key_id)
    if revoked is not None:
        await invalidate(session, Target("key", key_id))
        await audit.record(
            session, actor, action="key.revoked", target_type="api_key", target_id=key_id
        )
        await record_event(session, key, event_types.KeyRevokedData, revoked_at=now)
    return key


async def rotate_key(
    session: AsyncSession,
    actor: Actor,
    key_id: uuid.UUID,
    *,
    grace: timedelta,
    prefix: str,
) -> tuple[ApiKey, str]:
    """Give the key a new secret. The old one dies now, or at the end of ``grace`` (at most 7
    days); a secret kept from an earlier rotation dies now either way."""
    key = await get_key(session, actor, key_id)
    now = utcnow()
    if key.status_at(now) is not KeyStatus.active:
        raise Conflict(f"A {key.status_at(now).value} key cannot be rotated")
    secret = generate_key(prefix, key.environment)
    keep_old = grace > timedelta(0)
    # One conditional UPDATE, so that a concurrent revocation or rotation wins cleanly; SET reads
    # the row's old key_hash on both backends.
    rotated = await session.scalar(
        update(ApiKey)
        .where(ApiKey.id == key.id, ApiKey.key_hash == key.key_hash, ApiKey.revoked_at.is_(None))
        .values(
            key_hash=hash_key(secret),
            hint=key_hint(secret),
            previous_hash=ApiKey.key_hash if keep_old else None,
            previous_expires_at=now + grace if keep_old else None,
            last_rotated_at=now,
            updated_at=now,
        )
        .returning(ApiKey.id),
        execution_options={"synchronize_session": "fetch"},
    )
    if rotated is None:
        raise Conflict("The key changed while rotating it; try again")
    await session.refresh(key)
    await invalidate(session, Target("key", key.id))
    await audit.record(
        session,
        actor,
        action="key.rotated",
        target_type="api_key",
        target_id=key.id,
        details={"grace_period_seconds": int(grace.total_seconds())},
    )
    await record_event(
        session,
        key,
        event_types.KeyRotatedData,
        hint=key.hint,
        rotated_at=now,
        previous_secret_expires_at=key.previous_expires_at,
    )
    return key, secret


async def alert_thresholds(
    session: AsyncSession, settings: Settings, keys: Sequence[ApiKey]
) -> dict[uuid.UUID, AlertThresholds]:
    """The alert thresholds in force for each of ``keys``: its own, else its account's, else
    the deployment's (a personal key, which reaches several accounts: its own, else the
    deployment's). One query for the keys' accounts."""
    account_ids = {key.account_id for key in keys if key.account_id is not None}
    accounts = (
        {
            account.id: account
            for account in await session.scalars(select(Account).where(Account.id.in_(account_ids)))
        }
        if account_ids
        else {}
    )
    return {
        key.id: effective_alert_thresholds(
            settings, key, accounts.get(key.account_id) if key.account_id else None
        )
        for key in keys
    }


async def get_application_of(session: AsyncSession, key: ApiKey) -> Application | None:
    return await session.get(Application, key.application_id) if key.application_id else None

"""Issuing, listing, renaming and revoking keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice import scopes as scope_rules
from keyservice.applications import service as applications_service
from keyservice.audit import service as audit
from keyservice.errors import NotFound
from keyservice.models import ApiKey, KeyKind, KeyStatus, utcnow
from keyservice.pagination import PageParams, paginate
from keyservice.security import Environment, generate_key, hash_key, key_hint
from keyservice.verification.service import Principal


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
    created_by: Principal | None = None,
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


def check_grantable(actor: Principal, scopes: Sequence[str]) -> None:
    """No escalation: keyservice's own scopes can only be handed on by a key that holds them."""
    own = [s for s in scopes if s.startswith(scope_rules.KEYSERVICE_NAMESPACE)]
    scope_rules.check_within(own, actor.scopes, what="the calling key's own scopes")


async def create_application_key(
    session: AsyncSession,
    actor: Principal,
    *,
    application_id: uuid.UUID,
    name: str,
    scopes: Sequence[str],
    environment: Environment,
    expires_at: datetime | None,
    catalogue: tuple[str, ...],
    prefix: str,
) -> tuple[ApiKey, str]:
    application = await applications_service.get_application(
        session, account_id=actor.account_id, application_id=application_id
    )
    scopes = list(dict.fromkeys(scopes))
    scope_rules.check_in_catalogue(scopes, catalogue)
    scope_rules.check_within(scopes, application.permissions, what="the application's permissions")
    check_grantable(actor, scopes)
    key, secret = new_key(
        prefix=prefix,
        kind=KeyKind.application,
        name=name,
        environment=environment,
        scopes=scopes,
        expires_at=expires_at,
        account_id=actor.account_id,
        application_id=application.id,
        created_by=actor,
    )
    session.add(key)
    await session.flush()
    await audit.record(
        session,
        actor,
        action="key.created",
        target_type="api_key",
        target_id=key.id,
        details={
            "name": name,
            "application_id": str(application.id),
            "environment": environment.value,
            "scopes": scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return key, secret


async def list_keys(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    page: PageParams,
    application_id: uuid.UUID | None = None,
    environment: Environment | None = None,
    status: KeyStatus | None = None,
) -> tuple[Sequence[ApiKey], str | None]:
    statement = select(ApiKey).where(ApiKey.account_id == account_id)
    if application_id is not None:
        statement = statement.where(ApiKey.application_id == application_id)
    if environment is not None:
        statement = statement.where(ApiKey.environment == environment)
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


async def get_key(session: AsyncSession, *, account_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.account_id != account_id:
        raise NotFound("API key not found")
    return key


async def rename_key(
    session: AsyncSession, actor: Principal, key_id: uuid.UUID, *, name: str
) -> ApiKey:
    key = await get_key(session, account_id=actor.account_id, key_id=key_id)
    if key.name != name:
        old = key.name
        key.name = name
        await session.flush()
        await audit.record(
            session,
            actor,
            action="key.updated",
            target_type="api_key",
            target_id=key.id,
            details={"name": {"from": old, "to": name}},
        )
    return key


async def revoke_key(session: AsyncSession, actor: Principal, key_id: uuid.UUID) -> ApiKey:
    """Revoke at once. Revoking a revoked key changes nothing and records nothing."""
    now = utcnow()
    # One conditional UPDATE: of two concurrent revocations exactly one records the event.
    revoked = await session.scalar(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.account_id == actor.account_id,
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=now, updated_at=now)
        .returning(ApiKey.id)
    )
    if revoked is not None:
        await audit.record(
            session, actor, action="key.revoked", target_type="api_key", target_id=key_id
        )
    return await get_key(session, account_id=actor.account_id, key_id=key_id)

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.config import Settings, SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import Conflict, InvalidScope, NotFound, responses
from keyservice.keys import service
from keyservice.keys.schemas import (
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyRotate,
    KeyUpdate,
    PersonalKeyCreate,
)
from keyservice.models import ApiKey, KeyKind, KeyStatus, utcnow
from keyservice.pagination import Page, PageDep
from keyservice.ratelimit.policy import AlertThresholds
from keyservice.ratelimit.schemas import AlertThresholds as AlertThresholdsOut
from keyservice.ratelimit.schemas import RateLimit
from keyservice.scopes import catalogue
from keyservice.security import Environment
from keyservice.verification.dependency import (
    AUTH_ERRORS,
    USER_AUTH_ERRORS,
    require,
    require_user,
)
from keyservice.verification.service import Principal, UserPrincipal

router = APIRouter(tags=["keys"])

KeyReader = Annotated[Principal, Depends(require("keyservice:keys:read"))]
KeyWriter = Annotated[Principal, Depends(require("keyservice:keys:write"))]
# A user's own keys: the key must be the user's, and hold the scope itself (whatever the role).
OwnKeyReader = Annotated[UserPrincipal, Depends(require_user("keyservice:keys:read"))]
OwnKeyWriter = Annotated[UserPrincipal, Depends(require_user("keyservice:keys:write"))]

EnvironmentFilter = Annotated[Environment | None, Query()]
StatusFilter = Annotated[KeyStatus | None, Query()]


def key_out(key: ApiKey, thresholds: AlertThresholds) -> KeyOut:
    return KeyOut(
        id=key.id,
        kind=key.kind,
        name=key.name,
        hint=key.hint,
        environment=key.environment,
        scopes=key.scopes,
        status=key.status_at(utcnow()),
        application_id=key.application_id,
        user_id=key.user_id,
        created_at=key.created_at,
        updated_at=key.updated_at,
        last_rotated_at=key.last_rotated_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        rate_limit=RateLimit.of(key),
        monthly_quota=key.monthly_quota,
        alert_quota_percents=key.alert_quota_percents,
        alert_rate_limited_refusals=key.alert_rate_limited_refusals,
        alert_thresholds=AlertThresholdsOut.of(thresholds),
    )


async def keys_out(
    session: AsyncSession, settings: Settings, keys: Sequence[ApiKey]
) -> list[KeyOut]:
    thresholds = await service.alert_thresholds(session, settings, keys)
    return [key_out(key, thresholds[key.id]) for key in keys]


async def one_key_out(session: AsyncSession, settings: Settings, key: ApiKey) -> KeyOut:
    [out] = await keys_out(session, settings, [key])
    return out


async def key_created(
    session: AsyncSession, settings: Settings, key: ApiKey, secret: str
) -> KeyCreated:
    out = await one_key_out(session, settings, key)
    return KeyCreated(**out.model_dump(), key=secret)


@router.post(
    "/v1/applications/{application_id}/keys",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*AUTH_ERRORS, NotFound, InvalidScope),
)
async def create_key(
    session: SessionDep,
    settings: SettingsDep,
    actor: KeyWriter,
    application_id: uuid.UUID,
    body: KeyCreate,
) -> KeyCreated:
    """Issue a key for an application.

    The response carries the secret in `key`: this is the only time it is shown. Afterwards the
    key is known by its `id` and `hint`. Scopes must be in the catalogue (`GET /v1/scopes`) and
    within the application's permissions.
    """
    key, secret = await service.create_application_key(
        session,
        actor,
        application_id,
        body,
        catalogue=catalogue(settings.scopes),
        prefix=settings.key_prefix,
    )
    return await key_created(session, settings, key, secret)


@router.get("/v1/keys", responses=responses(*AUTH_ERRORS))
async def list_keys(
    session: SessionDep,
    settings: SettingsDep,
    actor: KeyReader,
    page: PageDep,
    environment: EnvironmentFilter = None,
    status: StatusFilter = None,
    application_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Page[KeyOut]:
    """The account's application keys, newest first: name, hint, scopes, dates, status."""
    keys, next_cursor = await service.list_keys(
        session,
        actor,
        page=page,
        application_id=application_id,
        environment=environment,
        status=status,
    )
    return Page(data=await keys_out(session, settings, keys), next_cursor=next_cursor)


@router.get("/v1/keys/{key_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def get_key(
    session: SessionDep, settings: SettingsDep, actor: KeyReader, key_id: uuid.UUID
) -> KeyOut:
    """One key's metadata. The secret is never returned."""
    return await one_key_out(session, settings, await service.get_key(session, actor, key_id))


@router.patch("/v1/keys/{key_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def update_key(
    session: SessionDep, settings: SettingsDep, actor: KeyWriter, key_id: uuid.UUID, body: KeyUpdate
) -> KeyOut:
    """Rename a key, or change its rate limit, monthly quota or alert thresholds (null
    inherits again: the application's or account's, then the deployment's)."""
    return await one_key_out(
        session, settings, await service.update_key(session, actor, key_id, body)
    )


@router.post("/v1/keys/{key_id}/revoke", responses=responses(*AUTH_ERRORS, NotFound))
async def revoke_key(
    session: SessionDep, settings: SettingsDep, actor: KeyWriter, key_id: uuid.UUID
) -> KeyOut:
    """Revoke a key: it stops verifying at once, on every instance. Irreversible; revoking
    again is a no-op that answers the same."""
    return await one_key_out(session, settings, await service.revoke_key(session, actor, key_id))


@router.post("/v1/keys/{key_id}/rotate", responses=responses(*AUTH_ERRORS, NotFound, Conflict))
async def rotate_key(
    session: SessionDep,
    settings: SettingsDep,
    actor: KeyWriter,
    key_id: uuid.UUID,
    body: KeyRotate | None = None,
) -> KeyCreated:
    """Give a key a new secret, returned once in `key`. The key keeps its id, name, scopes and
    history. The old secret stops working at once, or after `grace_period_seconds` (up to 7
    days) so that integrations can switch without downtime; verifications with it then report
    `rotated`. Irreversible."""
    grace = timedelta(seconds=body.grace_period_seconds if body else 0)
    key, secret = await service.rotate_key(
        session, actor, key_id, grace=grace, prefix=settings.key_prefix
    )
    return await key_created(session, settings, key, secret)


@router.post(
    "/v1/users/me/keys",
    tags=["users"],
    status_code=status.HTTP_201_CREATED,
    responses=responses(*USER_AUTH_ERRORS, InvalidScope),
)
async def create_personal_key(
    session: SessionDep, settings: SettingsDep, actor: OwnKeyWriter, body: PersonalKeyCreate
) -> KeyCreated:
    """Issue a personal key for the calling user.

    It reaches every account the user belongs to, with its scopes limited in each by the user's
    role there (a member's key reads only). Requests with it name the account with `account_id`
    (or `X-Account-Id`) when the user belongs to several. The secret is in this response only.
    """
    key, secret = await service.create_personal_key(
        session, actor, body, catalogue=catalogue(settings.scopes), prefix=settings.key_prefix
    )
    return await key_created(session, settings, key, secret)


@router.get("/v1/users/me/keys", tags=["users"], responses=responses(*USER_AUTH_ERRORS))
async def list_personal_keys(
    session: SessionDep,
    settings: SettingsDep,
    actor: OwnKeyReader,
    page: PageDep,
    environment: EnvironmentFilter = None,
    status: StatusFilter = None,
) -> Page[KeyOut]:
    """The calling user's personal keys, newest first."""
    keys, next_cursor = await service.list_keys(
        session, actor, page=page, environment=environment, status=status, kind=KeyKind.personal
    )
    return Page(data=await keys_out(session, settings, keys), next_cursor=next_cursor)


@router.get(
    "/v1/users/me/keys/{key_id}", tags=["users"], responses=responses(*USER_AUTH_ERRORS, NotFound)
)
async def get_personal_key(
    session: SessionDep, settings: SettingsDep, actor: OwnKeyReader, key_id: uuid.UUID
) -> KeyOut:
    """One of the calling user's keys."""
    return await one_key_out(session, settings, await service.get_key(session, actor, key_id))


@router.patch(
    "/v1/users/me/keys/{key_id}", tags=["users"], responses=responses(*USER_AUTH_ERRORS, NotFound)
)
async def update_personal_key(
    session: SessionDep,
    settings: SettingsDep,
    actor: OwnKeyWriter,
    key_id: uuid.UUID,
    body: KeyUpdate,
) -> KeyOut:
    """Rename one of the calling user's keys, or change its limits or alert thresholds."""
    return await one_key_out(
        session, settings, await service.update_key(session, actor, key_id, body)
    )


@router.post(
    "/v1/users/me/keys/{key_id}/revoke",
    tags=["users"],
    responses=responses(*USER_AUTH_ERRORS, NotFound),
)
async def revoke_personal_key(
    session: SessionDep, settings: SettingsDep, actor: OwnKeyWriter, key_id: uuid.UUID
) -> KeyOut:
    """Revoke one of the calling user's keys, at once and everywhere."""
    return await one_key_out(session, settings, await service.revoke_key(session, actor, key_id))


@router.post(
    "/v1/users/me/keys/{key_id}/rotate",
    tags=["users"],
    responses=responses(*USER_AUTH_ERRORS, NotFound, Conflict),
)
async def rotate_personal_key(
    session: SessionDep,
    settings: SettingsDep,
    actor: OwnKeyWriter,
    key_id: uuid.UUID,
    body: KeyRotate | None = None,
) -> KeyCreated:
    """Give one of the calling user's keys a new secret (see `POST /v1/keys/{key_id}/rotate`)."""
    grace = timedelta(seconds=body.grace_period_seconds if body else 0)
    key, secret = await service.rotate_key(
        session, actor, key_id, grace=grace, prefix=settings.key_prefix
    )
    return await key_created(session, settings, key, secret)

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from keyservice.config import SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import InvalidScope, NotFound, responses
from keyservice.keys import service
from keyservice.keys.schemas import KeyCreate, KeyCreated, KeyOut, KeyUpdate
from keyservice.models import ApiKey, KeyStatus, utcnow
from keyservice.pagination import Page, PageDep
from keyservice.scopes import catalogue
from keyservice.security import Environment
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter(tags=["keys"])

KeyReader = Annotated[Principal, Depends(require("keyservice:keys:read"))]
KeyWriter = Annotated[Principal, Depends(require("keyservice:keys:write"))]


def key_out(key: ApiKey) -> KeyOut:
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
    )


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
        application_id=application_id,
        name=body.name,
        scopes=body.scopes,
        environment=body.environment,
        expires_at=body.expiry(utcnow()),
        catalogue=catalogue(settings.scopes),
        prefix=settings.key_prefix,
    )
    return KeyCreated(**key_out(key).model_dump(), key=secret)


@router.get("/v1/keys", responses=responses(*AUTH_ERRORS))
async def list_keys(
    session: SessionDep,
    actor: KeyReader,
    page: PageDep,
    application_id: Annotated[uuid.UUID | None, Query()] = None,
    environment: Annotated[Environment | None, Query()] = None,
    status: Annotated[KeyStatus | None, Query()] = None,
) -> Page[KeyOut]:
    """The account's application keys, newest first: name, hint, scopes, dates, status."""
    keys, next_cursor = await service.list_keys(
        session,
        account_id=actor.account_id,
        page=page,
        application_id=application_id,
        environment=environment,
        status=status,
    )
    return Page(data=[key_out(k) for k in keys], next_cursor=next_cursor)


@router.get("/v1/keys/{key_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def get_key(session: SessionDep, actor: KeyReader, key_id: uuid.UUID) -> KeyOut:
    """One key's metadata. The secret is never returned."""
    return key_out(await service.get_key(session, account_id=actor.account_id, key_id=key_id))


@router.patch("/v1/keys/{key_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def update_key(
    session: SessionDep, actor: KeyWriter, key_id: uuid.UUID, body: KeyUpdate
) -> KeyOut:
    """Rename a key."""
    return key_out(await service.rename_key(session, actor, key_id, name=body.name))


@router.post("/v1/keys/{key_id}/revoke", responses=responses(*AUTH_ERRORS, NotFound))
async def revoke_key(session: SessionDep, actor: KeyWriter, key_id: uuid.UUID) -> KeyOut:
    """Revoke a key: it stops verifying at once, everywhere. Irreversible; revoking again is a
    no-op that answers the same."""
    return key_out(await service.revoke_key(session, actor, key_id))

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from keyservice.applications import service
from keyservice.applications.schemas import ApplicationCreate, ApplicationOut, ApplicationUpdate
from keyservice.config import SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import InvalidScope, NotFound, responses
from keyservice.pagination import Page, PageDep
from keyservice.scopes import catalogue
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter(prefix="/v1/applications", tags=["applications"])

ApplicationReader = Annotated[Principal, Depends(require("keyservice:applications:read"))]
ApplicationWriter = Annotated[Principal, Depends(require("keyservice:applications:write"))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*AUTH_ERRORS, InvalidScope),
)
async def create_application(
    session: SessionDep, settings: SettingsDep, actor: ApplicationWriter, body: ApplicationCreate
) -> ApplicationOut:
    """Create an application: one per integration, with the permissions its keys may hold."""
    application = await service.create_application(
        session, actor, body, catalogue=catalogue(settings.scopes)
    )
    return ApplicationOut.of(application)


@router.get("", responses=responses(*AUTH_ERRORS))
async def list_applications(
    session: SessionDep, actor: ApplicationReader, page: PageDep
) -> Page[ApplicationOut]:
    """The account's applications, newest first."""
    applications, next_cursor = await service.list_applications(
        session, account_id=actor.account_id, page=page
    )
    return Page(data=[ApplicationOut.of(a) for a in applications], next_cursor=next_cursor)


@router.get("/{application_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def get_application(
    session: SessionDep, actor: ApplicationReader, application_id: uuid.UUID
) -> ApplicationOut:
    """One application."""
    application = await service.get_application(
        session, account_id=actor.account_id, application_id=application_id
    )
    return ApplicationOut.of(application)


@router.patch("/{application_id}", responses=responses(*AUTH_ERRORS, NotFound, InvalidScope))
async def update_application(
    session: SessionDep,
    settings: SettingsDep,
    actor: ApplicationWriter,
    application_id: uuid.UUID,
    body: ApplicationUpdate,
) -> ApplicationOut:
    """Change an application's details or permissions. Keys lose at once any scope that the new
    permissions no longer cover."""
    application = await service.update_application(
        session, actor, application_id, body, catalogue=catalogue(settings.scopes)
    )
    return ApplicationOut.of(application)


@router.delete(
    "/{application_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def delete_application(
    session: SessionDep, actor: ApplicationWriter, application_id: uuid.UUID
) -> None:
    """Delete an application and all its keys, which stop verifying at once."""
    await service.delete_application(session, actor, application_id)

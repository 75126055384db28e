"""Applications: one per integration, with the permissions its keys may hold."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from keyservice.applications import service
from keyservice.applications.schemas import ApplicationCreate, ApplicationUpdate
from keyservice.config import SettingsDep
from keyservice.console import web
from keyservice.db import SessionDep
from keyservice.errors import KeyServiceError
from keyservice.pagination import DEFAULT_PAGE_SIZE, PageParams
from keyservice.scopes import KEYSERVICE_SCOPES, catalogue

router = APIRouter(prefix="/applications")

Reader = Annotated[web.Visitor, Depends(web.requires("keyservice:applications:read"))]
Writer = Annotated[web.Visitor, Depends(web.requires("keyservice:applications:write"))]
WRITE = "keyservice:applications:write"


def permission_groups(scopes: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """The catalogue as the form's checkbox groups: the product's scopes, then keyservice's."""
    every = catalogue(scopes)
    own = [s for s in every if s in KEYSERVICE_SCOPES]
    return [
        ("Product", [s for s in every if s not in KEYSERVICE_SCOPES]),
        ("keyservice management", own),
    ]


async def _fields(request: Request) -> dict[str, Any]:
    form = await request.form()
    return {
        "name": str(form.get("name", "")),
        "developer_email": str(form.get("developer_email", "")),
        "description": str(form.get("description", "")),
        "permissions": [str(p) for p in form.getlist("permissions")],
    }


def _form_page(
    request: Request,
    visitor: web.Visitor,
    settings: SettingsDep,
    *,
    values: dict[str, Any],
    application: Any = None,
    problem: web.Problem | None = None,
) -> Response:
    return web.render(
        request,
        "applications/form.html",
        visitor,
        status_code=problem.status if problem else 200,
        application=application,
        values=values,
        groups=permission_groups(settings.scopes),
        problem=problem,
    )


@router.get("")
async def list_applications(
    request: Request,
    session: SessionDep,
    visitor: Reader,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    applications, next_cursor = await service.list_applications(
        session,
        account_id=visitor.account_id,
        page=PageParams(limit=DEFAULT_PAGE_SIZE, cursor=cursor),
    )
    return web.render(
        request,
        "applications/list.html",
        visitor,
        applications=applications,
        next_cursor=next_cursor,
        can_write=visitor.can(WRITE),
    )


@router.get("/new")
async def new_application(request: Request, visitor: Writer, settings: SettingsDep) -> Response:
    values = {"name": "", "developer_email": "", "description": "", "permissions": []}
    return _form_page(request, visitor, settings, values=values)


@router.post("")
async def create_application(
    request: Request, session: SessionDep, settings: SettingsDep, visitor: Writer
) -> Response:
    values = await _fields(request)
    try:
        body = ApplicationCreate(**values)
        application = await service.create_application(
            session, visitor.principal, body, catalogue=catalogue(settings.scopes)
        )
    except ValidationError as error:
        return _form_page(
            request, visitor, settings, values=values, problem=web.Problem.of_validation(error)
        )
    except KeyServiceError as error:
        return await web.undone(
            session,
            _form_page(request, visitor, settings, values=values, problem=web.Problem.of(error)),
        )
    return web.redirect(request, f"/applications/{application.id}?saved=created")


@router.get("/{application_id}")
async def show_application(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Reader,
    application_id: uuid.UUID,
    saved: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    application = await service.get_application(
        session, account_id=visitor.account_id, application_id=application_id
    )
    return web.render(
        request,
        "applications/show.html",
        visitor,
        application=application,
        saved=saved,
        can_write=visitor.can(WRITE),
        can_issue=visitor.can("keyservice:keys:write"),
    )


@router.get("/{application_id}/edit")
async def edit_application(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Writer,
    application_id: uuid.UUID,
) -> Response:
    application = await service.get_application(
        session, account_id=visitor.account_id, application_id=application_id
    )
    values = {
        "name": application.name,
        "developer_email": application.developer_email,
        "description": application.description,
        "permissions": application.permissions,
    }
    return _form_page(request, visitor, settings, values=values, application=application)


@router.post("/{application_id}")
async def update_application(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Writer,
    application_id: uuid.UUID,
) -> Response:
    application = await service.get_application(
        session, account_id=visitor.account_id, application_id=application_id
    )
    values = await _fields(request)
    try:
        body = ApplicationUpdate(**values)
        await service.update_application(
            session, visitor.principal, application_id, body, catalogue=catalogue(settings.scopes)
        )
    except ValidationError as error:
        return _form_page(
            request,
            visitor,
            settings,
            values=values,
            application=application,
            problem=web.Problem.of_validation(error),
        )
    except KeyServiceError as error:
        return await web.undone(
            session,
            _form_page(
                request,
                visitor,
                settings,
                values=values,
                application=application,
                problem=web.Problem.of(error),
            ),
        )
    return web.redirect(request, f"/applications/{application_id}?saved=updated")


@router.get("/{application_id}/delete")
async def confirm_delete(
    request: Request, session: SessionDep, visitor: Writer, application_id: uuid.UUID
) -> Response:
    application = await service.get_application(
        session, account_id=visitor.account_id, application_id=application_id
    )
    return web.render(
        request,
        "confirm.html",
        visitor,
        title=f"Delete {application.name}?",
        consequences=[
            "Every key of this application stops working at once, everywhere.",
            "Its keys, their usage history and the application cannot be brought back.",
        ],
        action=f"/applications/{application.id}/delete",
        button="Delete application",
        cancel=f"/applications/{application.id}",
    )


@router.post("/{application_id}/delete")
async def delete_application(
    request: Request, session: SessionDep, visitor: Writer, application_id: uuid.UUID
) -> Response:
    await service.delete_application(session, visitor.principal, application_id)
    return web.redirect(request, "/applications?saved=deleted")

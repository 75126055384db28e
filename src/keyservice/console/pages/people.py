"""Members and invitations, the user's personal keys, and the audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from keyservice.accounts import service as accounts_service
from keyservice.accounts.schemas import InvitationAccept, MemberCreate, MemberUpdate
from keyservice.audit import service as audit_service
from keyservice.config import SettingsDep
from keyservice.console import web
from keyservice.console.pages.keys import EXPIRY_CHOICES
from keyservice.db import SessionDep
from keyservice.errors import KeyServiceError, NotFound
from keyservice.keys import service as keys_service
from keyservice.keys.schemas import PersonalKeyCreate
from keyservice.models import KeyKind, Role
from keyservice.pagination import DEFAULT_PAGE_SIZE, PageParams
from keyservice.scopes import catalogue
from keyservice.verification.service import UserPrincipal

router = APIRouter()

MemberReader = Annotated[web.Visitor, Depends(web.requires("keyservice:members:read"))]
MemberWriter = Annotated[web.Visitor, Depends(web.requires("keyservice:members:write"))]
AuditReader = Annotated[web.Visitor, Depends(web.requires("keyservice:audit:read"))]
# A user's own things need only a signed-in user; their scopes are checked as the API does.
Signed = Annotated[web.Visitor, Depends(web.requires())]
ROLES = tuple(role.value for role in Role)


def _page(cursor: str | None) -> PageParams:
    return PageParams(limit=DEFAULT_PAGE_SIZE, cursor=cursor)


# Members


async def _members_page(
    request: Request,
    session: SessionDep,
    visitor: web.Visitor,
    *,
    cursor: str | None = None,
    values: dict[str, Any] | None = None,
    problem: web.Problem | None = None,
    invited: dict[str, str] | None = None,
    saved: str | None = None,
) -> Response:
    members, next_cursor = await accounts_service.list_members(
        session, account_id=visitor.account_id, page=_page(cursor)
    )
    return web.render(
        request,
        "people/members.html",
        visitor,
        section="members",
        status_code=problem.status if problem else 200,
        members=members,
        next_cursor=next_cursor,
        roles=ROLES,
        values=values or {"email": "", "role": "member"},
        problem=problem,
        invited=invited,
        saved=saved,
        can_write=visitor.can("keyservice:members:write"),
    )


@router.get("/members")
async def members(
    request: Request,
    session: SessionDep,
    visitor: MemberReader,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    saved: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    return await _members_page(request, session, visitor, cursor=cursor, saved=saved)


@router.post("/members")
async def add_member(request: Request, session: SessionDep, visitor: MemberWriter) -> Response:
    form = await request.form()
    values = {"email": str(form.get("email", "")).strip(), "role": str(form.get("role", ""))}
    password = str(form.get("password", "")) or None
    try:
        body = MemberCreate(email=values["email"], role=values["role"], password=password)
        membership, token = await accounts_service.add_member(
            session,
            visitor.principal,
            email=str(body.email),
            role=body.role,
            password=body.password,
        )
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except KeyServiceError as error:
        problem = web.Problem.of(error)
    else:
        if token is None:
            return web.redirect(request, "/members?saved=added")
        # The invitation token, this once, for the admin to hand over.
        return await _members_page(
            request,
            session,
            visitor,
            invited={"email": membership.user.email, "token": token},
        )
    page = await _members_page(request, session, visitor, values=values, problem=problem)
    return await web.undone(session, page)


@router.post("/members/{user_id}/role")
async def change_role(
    request: Request, session: SessionDep, visitor: MemberWriter, user_id: uuid.UUID
) -> Response:
    form = await request.form()
    try:
        body = MemberUpdate(role=str(form.get("role", "")))
        await accounts_service.change_role(
            session, visitor.principal, user_id=user_id, role=body.role
        )
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except KeyServiceError as error:
        problem = web.Problem.of(error)
    else:
        return web.redirect(request, "/members?saved=role")
    return await web.undone(
        session, await _members_page(request, session, visitor, problem=problem)
    )


@router.get("/members/{user_id}/remove")
async def confirm_remove(
    request: Request, session: SessionDep, visitor: MemberWriter, user_id: uuid.UUID
) -> Response:
    membership = await accounts_service.get_membership(
        session, account_id=visitor.account_id, user_id=user_id
    )
    return web.render(
        request,
        "confirm.html",
        visitor,
        section="members",
        title=f"Remove {membership.user.email}?",
        consequences=[
            f"{membership.user.email} loses access to {visitor.account.name} at once: their "
            "personal keys and console sessions stop reaching it.",
            "Keys of the account's applications are not affected.",
        ],
        action=f"/members/{user_id}/remove",
        button="Remove member",
        cancel="/members",
    )


@router.post("/members/{user_id}/remove")
async def remove_member(
    request: Request, session: SessionDep, visitor: MemberWriter, user_id: uuid.UUID
) -> Response:
    try:
        await accounts_service.remove_member(session, visitor.principal, user_id=user_id)
    except KeyServiceError as error:
        if error.status == 404:
            raise
        page = await _members_page(request, session, visitor, problem=web.Problem.of(error))
        return await web.undone(session, page)
    return web.redirect(request, "/members?saved=removed")


# Personal keys: the signed-in user's own, whatever the account on screen.


def _user(visitor: web.Visitor, *scopes: str) -> UserPrincipal:
    """The visitor as the API's ``/v1/users/me`` routes see a user: the session key's own
    rights, checked for ``scopes`` as those routes check them."""
    actor = UserPrincipal(
        key=visitor.principal.key,
        user_id=visitor.user_id,
        client_address=visitor.principal.client_address,
    )
    actor.require(*scopes)
    return actor


PERSONAL_DEFAULTS: dict[str, Any] = {
    "name": "",
    "scopes": [],
    "environment": "live",
    "expires_in": "90d",
}


async def _personal_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: web.Visitor,
    *,
    values: dict[str, Any] | None = None,
    problem: web.Problem | None = None,
    created: tuple[Any, str] | None = None,
    saved: str | None = None,
    cursor: str | None = None,
    joined: str | None = None,
) -> Response:
    actor = _user(visitor, "keyservice:keys:read")
    keys, next_cursor = await keys_service.list_keys(
        session, actor, page=_page(cursor), kind=KeyKind.personal
    )
    return web.render(
        request,
        "people/personal_keys.html",
        visitor,
        section="personal",
        status_code=problem.status if problem else 200,
        keys=keys,
        now=datetime.now(UTC),
        next_cursor=next_cursor,
        scopes=catalogue(settings.scopes),
        expiry_choices=EXPIRY_CHOICES,
        values=values or dict(PERSONAL_DEFAULTS),
        problem=problem,
        created=created,
        saved=saved,
        joined=joined,
    )


@router.get("/personal-keys")
async def personal_keys(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Signed,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    saved: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    return await _personal_page(request, session, settings, visitor, cursor=cursor, saved=saved)


@router.post("/personal-keys")
async def create_personal_key(
    request: Request, session: SessionDep, settings: SettingsDep, visitor: Signed
) -> Response:
    actor = _user(visitor, "keyservice:keys:write")
    form = await request.form()
    values = {
        "name": str(form.get("name", "")).strip(),
        "scopes": [str(s) for s in form.getlist("scopes")],
        "environment": str(form.get("environment", "live")),
        "expires_in": str(form.get("expires_in", "90d")),
    }
    try:
        body = PersonalKeyCreate(**values)
        key, secret = await keys_service.create_personal_key(
            session,
            actor,
            body,
            catalogue=catalogue(settings.scopes),
            prefix=settings.key_prefix,
        )
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except KeyServiceError as error:
        problem = web.Problem.of(error)
    else:
        return await _personal_page(request, session, settings, visitor, created=(key, secret))
    page = await _personal_page(request, session, settings, visitor, values=values, problem=problem)
    return await web.undone(session, page)


@router.get("/personal-keys/{key_id}/revoke")
async def confirm_revoke_personal(
    request: Request, session: SessionDep, visitor: Signed, key_id: uuid.UUID
) -> Response:
    key = await keys_service.get_key(session, _user(visitor, "keyservice:keys:write"), key_id)
    return web.render(
        request,
        "confirm.html",
        visitor,
        section="personal",
        title=f"Revoke {key.name}?",
        consequences=[
            f"The key {key.hint} stops working at once, in every account it reaches.",
            "Revoking cannot be undone.",
        ],
        action=f"/personal-keys/{key.id}/revoke",
        button="Revoke key",
        cancel="/personal-keys",
    )


@router.post("/personal-keys/{key_id}/revoke")
async def revoke_personal(
    request: Request, session: SessionDep, visitor: Signed, key_id: uuid.UUID
) -> Response:
    actor = _user(visitor, "keyservice:keys:write")
    key = await keys_service.get_key(session, actor, key_id)
    if key.kind is not KeyKind.personal:
        # The console's own session is ended by signing out, not here.
        raise NotFound("Key not found")
    await keys_service.revoke_key(session, actor, key_id)
    return web.redirect(request, "/personal-keys?saved=revoked")


@router.post("/invitations/accept")
async def accept_invitation(
    request: Request, session: SessionDep, settings: SettingsDep, visitor: Signed
) -> Response:
    actor = _user(visitor, "keyservice:members:write")
    form = await request.form()
    try:
        body = InvitationAccept(token=str(form.get("token", "")).strip())
        membership = await accounts_service.accept_invitation(session, actor, token=body.token)
        account = await accounts_service.get_account(session, membership.account_id)
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except KeyServiceError as error:
        problem = web.Problem.of(error)
    else:
        return await _personal_page(request, session, settings, visitor, joined=account.name)
    page = await _personal_page(request, session, settings, visitor, problem=problem)
    return await web.undone(session, page)


# The audit log


@router.get("/audit")
async def audit_log(
    request: Request,
    session: SessionDep,
    visitor: AuditReader,
    action: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    events, next_cursor = await audit_service.list_events(
        session, account_id=visitor.account_id, page=_page(cursor), action=action or None
    )
    return web.render(
        request,
        "people/audit.html",
        visitor,
        section="audit",
        events=events,
        actors=await audit_service.actor_names(session, events),
        next_cursor=next_cursor,
        actions=audit_service.ACTIONS,
        action=action or "",
    )


def summary(details: dict[str, Any]) -> str:
    """An audit event's details in a line."""
    parts = []
    for name, value in details.items():
        if isinstance(value, dict) and {"from", "to"} <= value.keys():
            parts.append(f"{name}: {value['from']} → {value['to']}")
        elif isinstance(value, list):
            parts.append(f"{name}: {', '.join(map(str, value)) or '—'}")
        else:
            parts.append(f"{name}: {value}")
    return "; ".join(parts)[:300]


web.templates.env.filters["audit_summary"] = summary

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from keyservice.accounts import service
from keyservice.accounts.schemas import (
    AccountOut,
    AccountUpdate,
    MemberCreate,
    MemberOut,
    MemberUpdate,
)
from keyservice.db import SessionDep
from keyservice.errors import Conflict, Forbidden, NotFound, responses
from keyservice.models import Membership
from keyservice.pagination import Page, PageDep
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter(prefix="/v1/account", tags=["account"])

AccountReader = Annotated[Principal, Depends(require("keyservice:account:read"))]
AccountWriter = Annotated[Principal, Depends(require("keyservice:account:write"))]
MemberReader = Annotated[Principal, Depends(require("keyservice:members:read"))]
MemberWriter = Annotated[Principal, Depends(require("keyservice:members:write"))]


def _member(membership: Membership) -> MemberOut:
    return MemberOut(
        user_id=membership.user_id,
        email=membership.user.email,
        role=membership.role,
        created_at=membership.created_at,
    )


@router.get("", responses=responses(*AUTH_ERRORS))
async def get_account(session: SessionDep, actor: AccountReader) -> AccountOut:
    """The account the key acts on."""
    return AccountOut.model_validate(await service.get_account(session, actor.account_id))


@router.patch("", responses=responses(*AUTH_ERRORS))
async def update_account(
    session: SessionDep, actor: AccountWriter, body: AccountUpdate
) -> AccountOut:
    """Rename the account."""
    return AccountOut.model_validate(await service.rename_account(session, actor, name=body.name))


@router.get("/members", responses=responses(*AUTH_ERRORS))
async def list_members(session: SessionDep, actor: MemberReader, page: PageDep) -> Page[MemberOut]:
    """The account's members and their roles, newest first."""
    members, next_cursor = await service.list_members(
        session, account_id=actor.account_id, page=page
    )
    return Page(data=[_member(m) for m in members], next_cursor=next_cursor)


@router.post(
    "/members",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*AUTH_ERRORS, Forbidden, Conflict),
)
async def add_member(session: SessionDep, actor: MemberWriter, body: MemberCreate) -> MemberOut:
    """Add a user to the account by email, creating the user if needed.

    Roles: `owner` and `admin` manage the account (only an owner grants the owner role);
    `member` reads. A new user gets `password` as their initial password; an existing user keeps
    their own.
    """
    membership = await service.add_member(
        session,
        actor,
        email=str(body.email),
        role=body.role,
        password=body.password,
    )
    return _member(membership)


@router.get("/members/{user_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def get_member(session: SessionDep, actor: MemberReader, user_id: uuid.UUID) -> MemberOut:
    """One member of the account."""
    return _member(
        await service.get_membership(session, account_id=actor.account_id, user_id=user_id)
    )


@router.patch(
    "/members/{user_id}", responses=responses(*AUTH_ERRORS, Forbidden, NotFound, Conflict)
)
async def update_member(
    session: SessionDep, actor: MemberWriter, user_id: uuid.UUID, body: MemberUpdate
) -> MemberOut:
    """Change a member's role. The last owner cannot be demoted."""
    return _member(await service.change_role(session, actor, user_id=user_id, role=body.role))


@router.delete(
    "/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTH_ERRORS, Forbidden, NotFound, Conflict),
)
async def remove_member(session: SessionDep, actor: MemberWriter, user_id: uuid.UUID) -> None:
    """Remove a user from the account; their personal keys stop reaching it. The last owner
    cannot be removed."""
    await service.remove_member(session, actor, user_id=user_id)

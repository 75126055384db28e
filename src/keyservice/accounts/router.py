from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from keyservice.accounts import service, sessions
from keyservice.accounts.schemas import (
    AccountMembership,
    AccountOut,
    AccountUpdate,
    InvitationAccept,
    LoginRequest,
    MemberAdded,
    MemberCreate,
    MemberOut,
    MembershipStatus,
    MemberUpdate,
    SessionCreated,
    UserOut,
)
from keyservice.config import Settings, SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    NotFound,
    TooManyRequests,
    ValidationFailed,
    responses,
)
from keyservice.models import Account, Membership, User
from keyservice.pagination import Page, PageDep
from keyservice.ratelimit.schemas import AlertThresholds
from keyservice.scopes import catalogue
from keyservice.verification.dependency import (
    AUTH_ERRORS,
    USER_AUTH_ERRORS,
    client_address,
    require,
    require_user,
)
from keyservice.verification.service import Principal, UserPrincipal

router = APIRouter(prefix="/v1/account", tags=["account"])
sessions_router = APIRouter(tags=["sessions"])

AccountReader = Annotated[Principal, Depends(require("keyservice:account:read"))]
AccountWriter = Annotated[Principal, Depends(require("keyservice:account:write"))]
MemberReader = Annotated[Principal, Depends(require("keyservice:members:read"))]
MemberWriter = Annotated[Principal, Depends(require("keyservice:members:write"))]


def _status(membership: Membership) -> MembershipStatus:
    return "active" if membership.active else "invited"


def _member(membership: Membership) -> MemberOut:
    return MemberOut(
        user_id=membership.user_id,
        email=membership.user.email,
        role=membership.role,
        status=_status(membership),
        created_at=membership.created_at,
    )


def _account(settings: Settings, account: Account) -> AccountOut:
    return AccountOut(
        id=account.id,
        name=account.name,
        created_at=account.created_at,
        updated_at=account.updated_at,
        alert_quota_percents=account.alert_quota_percents,
        alert_rate_limited_refusals=account.alert_rate_limited_refusals,
        alert_thresholds=AlertThresholds.of(service.alert_thresholds(settings, account)),
        alert_emails_to_admins=account.alert_emails_to_admins,
    )


@router.get("", responses=responses(*AUTH_ERRORS))
async def get_account(
    session: SessionDep, settings: SettingsDep, actor: AccountReader
) -> AccountOut:
    """The account the key acts on, with its alert settings."""
    return _account(settings, await service.get_account(session, actor.account_id))


@router.patch("", responses=responses(*AUTH_ERRORS))
async def update_account(
    session: SessionDep, settings: SettingsDep, actor: AccountWriter, body: AccountUpdate
) -> AccountOut:
    """Rename the account, or change its alert settings: the thresholds at which its keys'
    usage raises `usage.threshold` alerts, where a key sets none (null inherits the
    deployment's again), and whether alert emails also go to its owners and admins."""
    return _account(settings, await service.update_account(session, actor, body))


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
async def add_member(session: SessionDep, actor: MemberWriter, body: MemberCreate) -> MemberAdded:
    """Add a user to the account by email.

    Roles: `owner` and `admin` manage the account (only an owner grants the owner role, only a
    user's key grants admin or owner); `member` reads. A new user joins at once with `password`
    as their initial password. A user who already exists is invited instead (`status: invited`):
    hand them `invitation_token`, which they accept with their own key; until then the
    membership gives them nothing.
    """
    membership, token = await service.add_member(
        session,
        actor,
        email=str(body.email),
        role=body.role,
        password=body.password,
    )
    return MemberAdded(**_member(membership).model_dump(), invitation_token=token)


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


UserKey = Annotated[UserPrincipal, Depends(require_user())]


def _user(user: User, memberships: Sequence[tuple[Membership, Account]]) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        accounts=[
            AccountMembership(
                account_id=account.id,
                name=account.name,
                role=membership.role,
                status=_status(membership),
            )
            for membership, account in memberships
        ],
    )


@sessions_router.post(
    "/v1/sessions",
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidCredentials, ValidationFailed, TooManyRequests),
)
async def create_session(
    request: Request, session: SessionDep, settings: SettingsDep, body: LoginRequest
) -> SessionCreated:
    """Log in with email and password for a short-lived session key (for a console).

    The key carries the user's rights in each of their accounts (name one with `X-Account-Id`
    when there are several). A wrong email and a wrong password get the same answer; repeated
    failures for an email or from an address get 429 with `Retry-After`.
    """
    try:
        login = await sessions.login(
            session,
            email=str(body.email),
            password=body.password,
            client_address=client_address(request),
            settings=settings,
            catalogue=catalogue(settings.scopes),
        )
    except InvalidCredentials:
        # The failure must count although the request fails (and its transaction would roll back).
        await session.commit()
        raise
    assert login.key.expires_at is not None
    return SessionCreated(
        key=login.secret,
        expires_at=login.key.expires_at,
        user=_user(login.user, login.memberships),
    )


@sessions_router.delete(
    "/v1/sessions/current",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*USER_AUTH_ERRORS),
)
async def end_session(session: SessionDep, actor: UserKey) -> None:
    """Log out: the calling session key stops working at once, everywhere."""
    await sessions.end_session(session, actor)


@sessions_router.get("/v1/users/me", tags=["users"], responses=responses(*USER_AUTH_ERRORS))
async def get_me(session: SessionDep, actor: UserKey) -> UserOut:
    """The user behind a personal or session key, and their accounts and roles."""
    user, memberships = await service.user_accounts(session, actor.user_id)
    return _user(user, memberships)


InvitationAcceptor = Annotated[UserPrincipal, Depends(require_user("keyservice:members:write"))]


@sessions_router.post(
    "/v1/users/me/invitations/accept",
    tags=["users"],
    responses=responses(*USER_AUTH_ERRORS, NotFound),
)
async def accept_invitation(
    session: SessionDep, actor: InvitationAcceptor, body: InvitationAccept
) -> AccountMembership:
    """Accept an invitation to another account with the token its admin handed you. From then
    on your personal and session keys reach that account too, with the invited role."""
    membership = await service.accept_invitation(session, actor, token=body.token)
    account = await service.get_account(session, membership.account_id)
    return AccountMembership(
        account_id=account.id, name=account.name, role=membership.role, status="active"
    )

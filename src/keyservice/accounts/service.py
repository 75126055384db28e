from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import contains_eager

from keyservice.accounts import passwords
from keyservice.accounts.passwords import hash_password
from keyservice.accounts.schemas import AccountUpdate
from keyservice.audit import service as audit
from keyservice.config import Settings
from keyservice.errors import Conflict, Forbidden, NotFound, ValidationFailed
from keyservice.events import catalogue as event_types
from keyservice.events import service as events
from keyservice.invalidations import Target, invalidate
from keyservice.models import (
    Account,
    ApiKey,
    AuditEvent,
    KeyKind,
    Membership,
    Role,
    User,
    utcnow,
)
from keyservice.pagination import PageParams, paginate
from keyservice.ratelimit.policy import AlertThresholds, effective_alert_thresholds
from keyservice.security import hash_key
from keyservice.verification.service import Principal, UserPrincipal

INVITATION_PREFIX = "ksinv_"
# An account's usage alert thresholds, which its keys' cached records carry.
ALERT_THRESHOLDS = ("alert_quota_percents", "alert_rate_limited_refusals")


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> Account:
    account = await session.get(Account, account_id)
    if account is None:
        raise NotFound("Account not found")
    return account


async def rename_account(session: AsyncSession, actor: Principal, *, name: str) -> Account:
    return await update_account(session, actor, AccountUpdate(name=name))


async def update_account(session: AsyncSession, actor: Principal, data: AccountUpdate) -> Account:
    """Rename the account, or change its alert settings (a null threshold inherits the
    deployment's again). Keys' cached records carry the thresholds: a change to them is
    announced to every instance's cache."""
    account = await get_account(session, actor.account_id)
    changes: dict[str, object] = {}
    for field in ("name", "alert_emails_to_admins"):
        if getattr(data, field) is not None:
            changes[field] = getattr(data, field)
    for field in ALERT_THRESHOLDS:
        if field in data.model_fields_set:
            changes[field] = getattr(data, field)
    changed = audit.apply_changes(account, changes)
    if changed:
        await session.flush()
        if changed.keys() & set(ALERT_THRESHOLDS):
            await invalidate(session, Target("account", account.id))
        await audit.record(
            session,
            actor,
            action="account.updated",
            target_type="account",
            target_id=account.id,
            details=changed,
        )
    return account


def alert_thresholds(settings: Settings, account: Account) -> AlertThresholds:
    """The alert thresholds in force for the account's keys that set none of their own."""
    return effective_alert_thresholds(settings, account)


async def list_members(
    session: AsyncSession, *, account_id: uuid.UUID, page: PageParams
) -> tuple[Sequence[Membership], str | None]:
    statement = (
        select(Membership)
        .join(Membership.user)
        .options(contains_eager(Membership.user))
        .where(Membership.account_id == account_id)
    )
    return await paginate(
        session, statement, page, created_at=Membership.created_at, id_=Membership.user_id
    )


async def get_membership(
    session: AsyncSession, *, account_id: uuid.UUID, user_id: uuid.UUID, lock: bool = False
) -> Membership:
    statement = (
        select(Membership)
        .join(Membership.user)
        .options(contains_eager(Membership.user))
        .where(Membership.account_id == account_id, Membership.user_id == user_id)
    )
    if lock:
        statement = statement.with_for_update(of=Membership)
    membership = (await session.scalars(statement)).first()
    if membership is None:
        raise NotFound("Member not found")
    return membership


def _check_may_grant(actor: Principal, *roles: Role) -> None:
    """Admins are made and unmade by a user who is at least an admin, owners by an owner; an
    application's key, which has no role of its own, only adds or removes plain members."""
    for role in roles:
        if role is Role.member:
            continue
        if actor.role is None:
            raise Forbidden("An application's key can only manage members, not admins or owners")
        if role is Role.owner and actor.role is not Role.owner:
            raise Forbidden("Only an owner can grant or take away the owner role")


async def _lock_account(session: AsyncSession, account_id: uuid.UUID) -> None:
    # Serialises changes to one account's owners, so that two concurrent demotions cannot both
    # pass the last-owner check (on SQLite, BEGIN IMMEDIATE serialises writers already).
    await session.execute(select(Account.id).where(Account.id == account_id).with_for_update())


async def _owner_count(session: AsyncSession, account_id: uuid.UUID) -> int:
    """The account's owners who have joined: an owner invitation not yet accepted owns nothing."""
    return (
        await session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.account_id == account_id,
                Membership.role == Role.owner,
                Membership.accepted_at.is_not(None),
            )
        )
        or 0
    )


async def _is_last_owner(session: AsyncSession, membership: Membership) -> bool:
    """Whether ``membership`` is the one accepted owner left. A pending invitation never is: it
    can be withdrawn or re-roled whoever else owns the account."""
    return (
        membership.role is Role.owner
        and membership.active
        and await _owner_count(session, membership.account_id) <= 1
    )


async def add_member(
    session: AsyncSession,
    actor: Principal,
    *,
    email: str,
    role: Role,
    password: str | None,
) -> tuple[Membership, str | None]:
    """Add a user to the account. A new user joins at once, with ``password`` as their initial
    password. A user who already exists (in another account) is only invited: the returned
    one-time token, handed to them out of band, lets them accept with their own key. Their
    password is never touched."""
    _check_may_grant(actor, role)
    email = email.lower()
    user = (await session.scalars(select(User).where(User.email == email))).first()
    token = None
    if user is None:
        password_hash = await asyncio.to_thread(hash_password, password) if password else None
        user = User(email=email, password_hash=password_hash)
        session.add(user)
        await session.flush()
        membership = Membership(
            account_id=actor.account_id, user_id=user.id, role=role, user=user, accepted_at=utcnow()
        )
    else:
        if await session.get(Membership, (actor.account_id, user.id)) is not None:
            raise Conflict("This user is already a member of the account, or invited")
        token = INVITATION_PREFIX + secrets.token_urlsafe(32)
        membership = Membership(
            account_id=actor.account_id,
            user_id=user.id,
            role=role,
            user=user,
            invitation_hash=hash_key(token),
        )
    session.add(membership)
    await session.flush()
    await invalidate(session, Target("user", user.id))
    await audit.record(
        session,
        actor,
        action="member.added" if token is None else "member.invited",
        target_type="user",
        target_id=user.id,
        details={"email": email, "role": role.value},
    )
    if token is None:
        # An invitation makes no member until it is accepted: member.added waits for that.
        await _record_added(session, membership, invited=False)
    return membership, token


async def _record_added(session: AsyncSession, membership: Membership, *, invited: bool) -> None:
    await events.record(
        session,
        account_id=membership.account_id,
        data=event_types.MemberAddedData(
            user_id=membership.user_id,
            email=membership.user.email,
            role=membership.role,
            invited=invited,
        ),
    )


async def accept_invitation(
    session: AsyncSession, actor: UserPrincipal, *, token: str
) -> Membership:
    """Join the account that invited the calling user; the token proves the invitation reached
    them, the key that they are who was invited."""
    membership = (
        await session.scalars(
            select(Membership)
            .join(Membership.user)
            .options(contains_eager(Membership.user))
            .where(
                Membership.invitation_hash == hash_key(token),
                Membership.user_id == actor.user_id,
                Membership.accepted_at.is_(None),
            )
        )
    ).first()
    if membership is None:
        raise NotFound("No such invitation for this user")
    membership.accepted_at = utcnow()
    membership.invitation_hash = None
    await session.flush()
    await invalidate(session, Target("user", actor.user_id))
    await audit.record(
        session,
        actor,
        action="member.joined",
        target_type="user",
        target_id=actor.user_id,
        details={"role": membership.role.value},
        account_id=membership.account_id,
    )
    await _record_added(session, membership, invited=True)
    return membership


async def change_role(
    session: AsyncSession, actor: Principal, *, user_id: uuid.UUID, role: Role
) -> Membership:
    await _lock_account(session, actor.account_id)
    membership = await get_membership(
        session, account_id=actor.account_id, user_id=user_id, lock=True
    )
    if membership.role == role:
        return membership
    _check_may_grant(actor, membership.role, role)
    if await _is_last_owner(session, membership):
        raise Conflict("The account's last owner cannot be demoted; make someone else owner first")
    old = membership.role
    membership.role = role
    await session.flush()
    await invalidate(session, Target("user", user_id))
    await audit.record(
        session,
        actor,
        action="member.role_changed",
        target_type="user",
        target_id=user_id,
        details={"role": {"from": old.value, "to": role.value}},
    )
    if membership.active:
        await events.record(
            session,
            account_id=membership.account_id,
            data=event_types.MemberUpdatedData(
                user_id=user_id,
                email=membership.user.email,
                changes=event_types.MemberChanges.model_validate(
                    {"role": event_types.change(old, role)}
                ),
            ),
        )
    return membership


async def remove_member(session: AsyncSession, actor: Principal, *, user_id: uuid.UUID) -> None:
    await _lock_account(session, actor.account_id)
    membership = await get_membership(
        session, account_id=actor.account_id, user_id=user_id, lock=True
    )
    _check_may_grant(actor, membership.role)
    if await _is_last_owner(session, membership):
        raise Conflict("The account's last owner cannot be removed")
    await session.delete(membership)
    await session.flush()
    await invalidate(session, Target("user", user_id))
    await audit.record(
        session,
        actor,
        action="member.removed",
        target_type="user",
        target_id=user_id,
        details={"email": membership.user.email, "role": membership.role.value},
    )
    if membership.active:
        await events.record(
            session,
            account_id=membership.account_id,
            data=event_types.MemberRemovedData(
                user_id=user_id, email=membership.user.email, role=membership.role
            ),
        )


async def bootstrap(
    session: AsyncSession,
    *,
    account_name: str,
    owner_email: str,
    password: str | None,
    key_prefix: str,
) -> tuple[Account, User, str]:
    """Create an account, its owner and an owner key (a personal key with every keyservice
    scope). Returns the key's secret, which exists nowhere else."""
    from keyservice.keys import service as keys_service

    owner_email = owner_email.lower()
    user = (await session.scalars(select(User).where(User.email == owner_email))).first()
    if user is None:
        password_hash = await asyncio.to_thread(hash_password, password) if password else None
        user = User(email=owner_email, password_hash=password_hash)
        session.add(user)
    account = Account(name=account_name)
    session.add(account)
    await session.flush()
    session.add(
        Membership(account_id=account.id, user_id=user.id, role=Role.owner, accepted_at=utcnow())
    )
    key, secret = keys_service.owner_key(
        prefix=key_prefix, user_id=user.id, name="Owner key (bootstrap)"
    )
    session.add(key)
    await session.flush()
    session.add(
        AuditEvent(
            account_id=account.id,
            actor_user_id=user.id,
            action="account.bootstrapped",
            target_type="account",
            target_id=str(account.id),
            details={"owner_email": owner_email, "key_id": str(key.id)},
        )
    )
    await session.flush()
    await keys_service.record_created(session, key)
    return account, user, secret


# Changes made with a keyservice command on the server say so in the audit trail.
FROM_SERVER = "keyservice command on the server"


async def user_by_email(session: AsyncSession, email: str) -> User:
    user = (await session.scalars(select(User).where(User.email == email.lower()))).first()
    if user is None:
        raise NotFound(f"No user has the email {email.lower()}")
    return user


async def issue_owner_key(
    session: AsyncSession,
    *,
    email: str,
    account_id: uuid.UUID | None = None,
    key_prefix: str,
) -> tuple[ApiKey, str]:
    """A new owner key (a personal key with every keyservice scope) for a user who owns an
    account (``account_id``, if named), for when they have lost theirs: the way back that needs
    access to the server rather than a key. Returns the key and its secret."""
    from keyservice.keys import service as keys_service

    user = await user_by_email(session, email)
    owned = set(
        (
            await session.scalars(
                select(Membership.account_id).where(
                    Membership.user_id == user.id,
                    Membership.role == Role.owner,
                    Membership.accepted_at.is_not(None),
                )
            )
        ).all()
    )
    if account_id is not None and account_id not in owned:
        raise Forbidden(f"{user.email} is not an owner of the account {account_id}")
    if not owned:
        raise Forbidden(f"{user.email} is not the owner of any account")
    key, secret = keys_service.owner_key(
        prefix=key_prefix, user_id=user.id, name="Owner key (issued on the server)"
    )
    session.add(key)
    await session.flush()
    await audit.record_from_server(
        session,
        user_id=user.id,
        action="key.created",
        target_type="api_key",
        target_id=key.id,
        details={
            **keys_service.created_details(key),
            "user_id": str(user.id),
            "via": FROM_SERVER,
        },
    )
    await keys_service.record_created(session, key)
    return key, secret


async def set_password(session: AsyncSession, *, email: str, password: str) -> User:
    """Set a user's password from the server (it is hashed like every other). The user's
    console sessions end: whoever signed in with the old password is signed out."""
    if not passwords.MIN_LENGTH <= len(password) <= passwords.MAX_LENGTH:
        raise ValidationFailed(
            f"A password has {passwords.MIN_LENGTH} to {passwords.MAX_LENGTH} characters"
        )
    user = await user_by_email(session, email)
    user.password_hash = await asyncio.to_thread(hash_password, password)
    now = utcnow()
    ended = (
        await session.scalars(
            update(ApiKey)
            .where(
                ApiKey.user_id == user.id,
                ApiKey.kind == KeyKind.session,
                ApiKey.revoked_at.is_(None),
            )
            .values(revoked_at=now, updated_at=now)
            .returning(ApiKey.id)
        )
    ).all()
    await session.flush()
    if ended:
        await invalidate(session, Target("user", user.id))
    await audit.record_from_server(
        session,
        user_id=user.id,
        action="user.password_set",
        target_type="user",
        target_id=user.id,
        details={"email": user.email, "via": FROM_SERVER, "sessions_ended": len(ended)},
    )
    return user


async def has_accounts(session: AsyncSession) -> bool:
    return (await session.scalar(select(Account.id).limit(1))) is not None


async def user_accounts(
    session: AsyncSession, user_id: uuid.UUID
) -> tuple[User, Sequence[tuple[Membership, Account]]]:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("User not found")
    rows = (
        await session.execute(
            select(Membership, Account)
            .join(Account, Account.id == Membership.account_id)
            .where(Membership.user_id == user_id)
            .order_by(Account.name)
        )
    ).all()
    return user, rows

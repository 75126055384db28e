from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.models import ApiKey, AuditEvent, Membership, User
from keyservice.pagination import PageParams, paginate
from keyservice.verification.service import Actor


def apply_changes(target: object, changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Set ``changes`` on ``target``; return those that changed anything, as the audit trail
    records them: ``{field: {"from": old, "to": new}}``."""
    changed = {
        field: {"from": getattr(target, field), "to": value}
        for field, value in changes.items()
        if getattr(target, field) != value
    }
    for field, change in changed.items():
        setattr(target, field, change["to"])
    return changed


async def record(
    session: AsyncSession,
    actor: Actor,
    *,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str,
    details: dict[str, Any] | None = None,
    account_id: uuid.UUID | None = None,
) -> None:
    """Append to the account's audit trail (the actor's, unless named), in the caller's
    transaction.

    A user acting on their own things (their personal keys) acts in no one account, yet such a
    key reaches every account the user has joined: the change is recorded in each of them, so
    that their admins see it, and on the user alone when they have joined none."""
    account_id = account_id or actor.account_id
    if account_id is not None:
        accounts: Sequence[uuid.UUID | None] = [account_id]
    else:
        accounts = await _joined_accounts(session, actor.user_id) or [None]
    for account in accounts:
        session.add(
            AuditEvent(
                account_id=account,
                actor_key_id=actor.key.id,
                actor_user_id=actor.user_id,
                action=action,
                target_type=target_type,
                target_id=str(target_id),
                details=details or {},
                # Bounded like the column; an address is never longer unless something is off.
                client_address=actor.client_address[:64] if actor.client_address else None,
            )
        )


async def record_from_server(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    action: str,
    target_type: str,
    target_id: uuid.UUID | str,
    details: dict[str, Any],
) -> None:
    """Record a change to a user's things made on the server, by a keyservice command rather
    than through the API (no key, no client address), in each account the user has joined."""
    for account in await _joined_accounts(session, user_id) or [None]:
        session.add(
            AuditEvent(
                account_id=account,
                action=action,
                target_type=target_type,
                target_id=str(target_id),
                details=details,
            )
        )


async def _joined_accounts(
    session: AsyncSession, user_id: uuid.UUID | None
) -> Sequence[uuid.UUID | None]:
    if user_id is None:
        return []
    return (
        await session.scalars(
            select(Membership.account_id).where(
                Membership.user_id == user_id, Membership.accepted_at.is_not(None)
            )
        )
    ).all()


async def list_events(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    page: PageParams,
    action: str | None = None,
) -> tuple[Sequence[AuditEvent], str | None]:
    statement = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if action is not None:
        statement = statement.where(AuditEvent.action == action)
    return await paginate(
        session, statement, page, created_at=AuditEvent.created_at, id_=AuditEvent.id
    )


# What the audit trail records, for filters (a console's select).
ACTIONS: tuple[str, ...] = (
    "account.bootstrapped",
    "account.updated",
    "application.created",
    "application.updated",
    "application.deleted",
    "key.created",
    "key.updated",
    "key.rotated",
    "key.revoked",
    "member.added",
    "member.invited",
    "member.joined",
    "member.role_changed",
    "member.removed",
    "user.password_set",
    "webhook_endpoint.created",
    "webhook_endpoint.updated",
    "webhook_endpoint.enabled",
    "webhook_endpoint.disabled",
    "webhook_endpoint.secret_rotated",
    "webhook_endpoint.deleted",
    "webhook_message.redelivered",
    "webhook_messages.replayed",
)


async def actor_names(session: AsyncSession, events: Sequence[AuditEvent]) -> dict[uuid.UUID, str]:
    """Who made each change, readably: users by email, keys by name and hint."""
    user_ids = {e.actor_user_id for e in events if e.actor_user_id}
    key_ids = {e.actor_key_id for e in events if e.actor_key_id}
    names: dict[uuid.UUID, str] = {}
    if user_ids:
        emails = await session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
        for user_id, email in emails.all():
            names[user_id] = email
    if key_ids:
        keys = await session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.hint).where(ApiKey.id.in_(key_ids))
        )
        names.update({key_id: f"{name} ({hint})" for key_id, name, hint in keys.all()})
    return names

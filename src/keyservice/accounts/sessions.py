"""Console logins: email and password for a short-lived session key, with throttled failures."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.accounts import service as accounts_service
from keyservice.accounts.passwords import verify_password
from keyservice.config import Settings
from keyservice.db import upsert
from keyservice.errors import Forbidden, InvalidCredentials, TooManyRequests
from keyservice.keys import service as keys_service
from keyservice.models import Account, ApiKey, KeyKind, LoginThrottle, Membership, User, utcnow
from keyservice.security import Environment
from keyservice.verification.service import UserPrincipal


@dataclass(frozen=True, slots=True)
class Login:
    user: User
    key: ApiKey
    secret: str
    memberships: Sequence[tuple[Membership, Account]]


def _throttle_keys(email: str, address: str | None) -> dict[str, int]:
    # Emails are hashed: the table says how often someone failed, not who they are.
    keys = {"email:" + hashlib.sha256(email.encode()).hexdigest(): 0}
    if address:
        keys["address:" + address[:100]] = 1
    return keys


async def _check_throttle(
    session: AsyncSession, keys: dict[str, int], settings: Settings, now: datetime
) -> None:
    limits = (settings.login_failures_per_email, settings.login_failures_per_address)
    rows = await session.execute(
        select(LoginThrottle.key, LoginThrottle.failures, LoginThrottle.window_ends_at).where(
            LoginThrottle.key.in_(keys), LoginThrottle.window_ends_at > now
        )
    )
    for key, failures, window_ends_at in rows:
        if failures >= limits[keys[key]]:
            retry_after = math.ceil((window_ends_at - now).total_seconds())
            raise TooManyRequests(
                "Too many failed logins; try again later", retry_after=max(retry_after, 1)
            )


async def _count_failure(
    session: AsyncSession, keys: dict[str, int], settings: Settings, now: datetime
) -> None:
    window_ends_at = now + timedelta(seconds=settings.login_failure_window_seconds)
    table = LoginThrottle.__table__
    expired = table.c.window_ends_at <= now
    for key in keys:
        # One atomic upsert per counter: concurrent failures all count.
        statement = upsert(session, table).values(
            key=key, failures=1, window_ends_at=window_ends_at
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "failures": case((expired, 1), else_=table.c.failures + 1),
                    "window_ends_at": case((expired, window_ends_at), else_=table.c.window_ends_at),
                },
            )
        )


async def login(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    client_address: str | None,
    settings: Settings,
    catalogue: tuple[str, ...],
) -> Login:
    """A session key with the user's rights, or ``InvalidCredentials`` that never says which of
    the email or the password was wrong. Raises ``TooManyRequests`` once an email or an address
    has failed too often in the window; the caller must commit the failure count even though
    the request fails."""
    email = email.lower()
    now = utcnow()
    keys = _throttle_keys(email, client_address)
    await _check_throttle(session, keys, settings, now)
    user = (await session.scalars(select(User).where(User.email == email))).first()
    # verify_password spends the same time on an unknown email as on a wrong password: tens of
    # milliseconds of Argon2, in a thread, or every request of this instance would wait for it.
    known_hash = user.password_hash if user else None
    if not await asyncio.to_thread(verify_password, password, known_hash) or user is None:
        await _count_failure(session, keys, settings, now)
        raise InvalidCredentials()
    email_key = next(iter(keys))
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == email_key))

    key, secret = keys_service.new_key(
        prefix=settings.key_prefix,
        kind=KeyKind.session,
        name="Console session",
        environment=Environment.live,
        scopes=catalogue,
        expires_at=now + timedelta(seconds=settings.session_ttl_seconds),
        user_id=user.id,
    )
    session.add(key)
    await session.flush()
    _, memberships = await accounts_service.user_accounts(session, user.id)
    return Login(user=user, key=key, secret=secret, memberships=memberships)


async def end_session(session: AsyncSession, actor: UserPrincipal) -> None:
    if actor.key.kind is not KeyKind.session:
        raise Forbidden("Only a session key ends its session; revoke other keys instead")
    await keys_service.revoke_key(session, actor, actor.key.id)

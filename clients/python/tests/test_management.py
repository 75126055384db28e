"""Every management call of the async client, against the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyservice_client import (
    AsyncKeyservice,
    CreatedKey,
    Key,
    NotFoundError,
    RateLimit,
)
from tests.support import FAST_RETRY, Server, TwoAccounts, new_application, new_key, unique


async def test_account_and_scopes(owner: AsyncKeyservice) -> None:
    account = await owner.account.get()
    assert account.created_at.tzinfo is not None
    renamed = await owner.account.update(name="Acme CRM")
    assert (renamed.id, renamed.name) == (account.id, "Acme CRM")
    scopes = await owner.scopes()
    assert "contacts:read" in scopes.product
    assert "keyservice:keys:write" in scopes.keyservice
    me = await owner.users.me()
    assert me.email == "owner@example.com"
    assert [(a.account_id, a.role, a.status) for a in me.accounts] == [
        (account.id, "owner", "active")
    ]


async def test_applications(owner: AsyncKeyservice) -> None:
    created = await owner.applications.create(
        name=unique("Zapier sync"),
        developer_email="dev@partner.example",
        description="Two-way sync",
        permissions=["contacts:read", "deals:*"],
        rate_limit=RateLimit(limit=100, period_seconds=60),
        monthly_quota=100_000,
    )
    assert created.permissions == ("contacts:read", "deals:*")
    assert created.rate_limit == RateLimit(limit=100, period_seconds=60, burst=100)
    assert await owner.applications.get(created.id) == created

    updated = await owner.applications.update(
        created.id, description="One-way now", rate_limit=None
    )
    assert updated.description == "One-way now"
    assert updated.rate_limit is None  # None inherits again
    assert updated.monthly_quota == 100_000  # left out: unchanged
    assert updated.permissions == created.permissions

    newer = await new_application(owner)
    page = await owner.applications.list(limit=1)
    assert [a.id for a in page.data] == [newer.id]
    assert page.next_cursor is not None
    listed = [a.id async for a in owner.applications.iterate(limit=1)]
    assert listed[:2] == [newer.id, created.id]

    await owner.applications.delete(created.id)
    with pytest.raises(NotFoundError):
        await owner.applications.get(created.id)


async def test_keys_create_list_rotate_revoke(owner: AsyncKeyservice) -> None:
    application = await new_application(owner)
    expires_at = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    created = await owner.keys.create(
        application.id,
        name="Production Integration",
        scopes=["contacts:read"],
        environment="test",
        expires_at=expires_at,
    )
    assert isinstance(created, CreatedKey)
    assert created.key.startswith("ks_test_")
    assert created.key not in repr(created)  # the secret stays out of logs
    assert (created.environment, created.status, created.expires_at) == (
        "test",
        "active",
        expires_at,
    )
    key = await owner.keys.get(created.id)
    assert isinstance(key, Key)
    assert not isinstance(key, CreatedKey)
    assert key.hint == created.hint

    renamed = await owner.keys.update(created.id, name="Staging", monthly_quota=500)
    assert (renamed.name, renamed.monthly_quota) == ("Staging", 500)

    rotated = await owner.keys.rotate(created.id, grace_period_seconds=3600)
    assert rotated.id == created.id
    assert rotated.key != created.key
    assert rotated.last_rotated_at is not None

    revoked = await owner.keys.revoke(created.id)
    assert (revoked.status, revoked.revoked_at is not None) == ("revoked", True)
    assert await owner.keys.revoke(created.id) == revoked  # a no-op the second time


async def test_the_key_iterator_walks_every_page(owner: AsyncKeyservice) -> None:
    application = await new_application(owner)
    created = [await new_key(owner, application=application) for _ in range(5)]
    newest_first = [k.id for k in reversed(created)]

    page = await owner.keys.list(application_id=application.id, limit=2)
    assert [k.id for k in page.data] == newest_first[:2]
    second = await owner.keys.list(application_id=application.id, limit=2, cursor=page.next_cursor)
    assert [k.id for k in second.data] == newest_first[2:4]

    walked = [k.id async for k in owner.keys.iterate(application_id=application.id, limit=2)]
    assert walked == newest_first

    await owner.keys.revoke(created[0].id)
    active = owner.keys.iterate(application_id=application.id, status="active", limit=2)
    assert [k.id async for k in active] == newest_first[:4]
    assert [
        k async for k in owner.keys.iterate(application_id=application.id, environment="test")
    ] == []


async def test_usage(owner: AsyncKeyservice) -> None:
    created = await new_key(owner)
    assert (await owner.verify(created.key, endpoint="GET /v1/contacts")).valid
    usage = await owner.keys.usage(created.id, granularity="day")
    assert usage.key_id == created.id
    assert usage.series.granularity == "day"
    assert usage.series.points  # one per day, zeros included
    assert usage.limits.monthly_quota is None
    start = datetime.now(UTC) - timedelta(hours=3)
    account = await owner.account.usage(granularity="hour", start=start)
    assert account.series.start <= start + timedelta(hours=1)
    assert account.current_month.allowed >= account.current_hour.allowed


async def test_audit_events_and_events(owner: AsyncKeyservice) -> None:
    created = await new_key(owner)
    await owner.keys.revoke(created.id)
    revocations = owner.audit_events.iterate(action="key.revoked", limit=1)
    latest = await anext(revocations)
    assert (latest.action, latest.target_id, latest.target_type) == (
        "key.revoked",
        created.id,
        "api_key",
    )
    assert latest.actor_key_id is not None
    page = await owner.audit_events.list(limit=3)
    assert len(page.data) == 3
    # No usage threshold was crossed; the key's own events, if the server records them, are
    # its creation and revocation.
    events = await owner.events.list(type="usage.threshold", key_id=created.id, limit=10)
    assert (events.data, events.next_cursor) == ((), None)
    keyed = [e async for e in owner.events.iterate(key_id=created.id, limit=1)]
    assert {e.key_id for e in keyed} <= {created.id}
    assert {e.type for e in keyed} <= {"key.created", "key.revoked"}


async def test_members_invitations_sessions_and_personal_keys(
    owner: AsyncKeyservice, server: Server
) -> None:
    email = f"{unique('dana').replace(' ', '-')}@example.com"
    added = await owner.members.add(email=email, role="admin", password="correct horse battery")
    assert (added.status, added.invitation_token, added.role) == ("active", None, "admin")
    assert (await owner.members.get(added.user_id)).email == email
    members = [m.email async for m in owner.members.iterate(limit=1)]
    assert email in members
    assert (await owner.members.list(limit=1)).next_cursor is not None
    assert (await owner.members.update(added.user_id, role="member")).role == "member"

    # Dana logs in; her session key works like any key, until she ends the session.
    async with AsyncKeyservice(server.url, retry=FAST_RETRY) as anonymous:
        session = await anonymous.sessions.create(email=email, password="correct horse battery")
    assert session.key not in repr(session)
    async with AsyncKeyservice(server.url, session.key, retry=FAST_RETRY) as dana:
        assert (await dana.users.me()).email == email
        personal = await dana.personal_keys.create(
            name="My script", scopes=["keyservice:keys:read", "contacts:read"], expires_in="30d"
        )
        assert personal.kind == "personal"
        assert (await dana.personal_keys.get(personal.id)).hint == personal.hint
        assert [k.id async for k in dana.personal_keys.iterate(status="active")] == [personal.id]
        assert (await dana.personal_keys.list(limit=1)).data[0].id == personal.id
        renamed = await dana.personal_keys.update(personal.id, name="Reporting script")
        assert renamed.name == "Reporting script"
        rotated = await dana.personal_keys.rotate(personal.id)
        assert rotated.key != personal.key
        assert (await dana.personal_keys.revoke(personal.id)).status == "revoked"
        await dana.sessions.end()
        assert not (await owner.verify(session.key)).valid

    # Another account invites her: she already has a user, so she must accept.
    other_owner_key = server.new_account(unique("other").replace(" ", "-") + "@example.com")
    async with AsyncKeyservice(server.url, other_owner_key, retry=FAST_RETRY) as other:
        invited = await other.members.add(email=email)
        assert invited.status == "invited"
        assert invited.invitation_token is not None
        assert invited.invitation_token not in repr(invited)
    async with AsyncKeyservice(server.url, retry=FAST_RETRY) as anonymous:
        session = await anonymous.sessions.create(email=email, password="correct horse battery")
    async with AsyncKeyservice(server.url, session.key, retry=FAST_RETRY) as dana:
        membership = await dana.users.accept_invitation(invited.invitation_token)
        assert (membership.status, membership.role) == ("active", "member")
        assert len((await dana.users.me()).accounts) == 2
        await dana.sessions.end()

    await owner.members.remove(added.user_id)
    assert email not in [m.email async for m in owner.members.iterate()]


async def test_a_users_key_names_its_account(server: Server, two_accounts: TwoAccounts) -> None:
    """A client of a user's key that reaches several accounts says which one it acts on."""
    for account_id in two_accounts.account_ids:
        async with AsyncKeyservice(
            server.url, two_accounts.key, account_id=account_id, retry=FAST_RETRY
        ) as user:
            assert (await user.account.get()).id == account_id

"""Members and invitations, personal keys and the audit log, as pages."""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession

from consoles import ConsoleUser, SignIn
from factories import Tenant, create_tenant, create_user
from keyservice.models import Role

KEY_RE = re.compile(r'id="secret" type="text" readonly value="(ks_(?:live|test)_[0-9A-Za-z]+)"')
TOKEN_RE = re.compile(r'id="secret" type="text" readonly value="([^"]+)"')


async def test_add_a_new_member_change_their_role_and_remove_them(owner: ConsoleUser) -> None:
    added = await owner.post(
        "/members",
        {"email": "dana@example.com", "role": "member", "password": "correct horse battery"},
    )
    assert added.status_code == 303
    page = await owner.get("/members")
    assert "dana@example.com" in page.text
    assert "correct horse battery" not in page.text
    user_id = re.search(r"/members/([0-9a-f-]{36})/remove", page.text)
    assert user_id
    changed = await owner.post(f"/members/{user_id.group(1)}/role", {"role": "admin"})
    assert changed.status_code == 303
    page = await owner.get("/members")
    assert re.search(r'value="admin" selected>admin', page.text)
    assert "stop reaching it" in (await owner.get(f"/members/{user_id.group(1)}/remove")).text
    removed = await owner.post(f"/members/{user_id.group(1)}/remove")
    assert removed.status_code == 303
    assert "dana@example.com" not in (await owner.get("/members")).text


async def test_an_existing_user_is_invited_with_a_token_shown_once(
    session: AsyncSession, owner: ConsoleUser, sign_in: SignIn
) -> None:
    elsewhere = await create_tenant(session, name="Initech")
    page = await owner.post("/members", {"email": elsewhere.owner.email, "role": "member"})
    assert page.status_code == 200
    assert "it will not be shown again" in page.text
    [token] = TOKEN_RE.findall(page.text)
    assert "invited" in (await owner.get("/members")).text
    assert token not in (await owner.get("/members")).text
    # The invited user accepts on their personal keys page, and the account is theirs to switch to.
    invited = await sign_in(elsewhere.owner)
    accepted = await invited.post("/invitations/accept", {"token": token})
    assert accepted.status_code == 200
    assert "You joined Acme CRM" in accepted.text
    assert "Acme CRM (member)" in (await invited.get("/applications")).text


async def test_the_last_owner_cannot_be_removed_and_the_page_says_why(
    owner: ConsoleUser,
) -> None:
    page = await owner.get("/members")
    user_id = re.search(r"/members/([0-9a-f-]{36})/remove", page.text)
    assert user_id
    refused = await owner.post(f"/members/{user_id.group(1)}/remove")
    assert refused.status_code == 409
    assert 'role="alert"' in refused.text
    assert owner.user.email in (await owner.get("/members")).text


async def test_a_bad_new_member_is_refused_inline(owner: ConsoleUser) -> None:
    page = await owner.post("/members", {"email": "not-an-email", "role": "member"})
    assert page.status_code == 422
    assert 'id="e-email"' in page.text
    page = await owner.post(
        "/members", {"email": "eve@example.com", "role": "member", "password": "short"}
    )
    assert page.status_code == 422
    assert 'id="e-password"' in page.text
    assert "eve@example.com" not in (await owner.get("/members")).text.split("<form")[0]


async def test_a_member_reads_members_but_changes_nothing(
    tenant_for_console: Tenant, owner: ConsoleUser, member: ConsoleUser
) -> None:
    page = await member.get("/members")
    assert page.status_code == 200
    assert "Add a member" not in page.text
    assert "/remove" not in page.text
    for path, data in (
        ("/members", {"email": "x@example.com", "role": "owner"}),
        (f"/members/{owner.user.id}/role", {"role": "member"}),
        (f"/members/{owner.user.id}/remove", {}),
    ):
        assert (await member.post(path, data)).status_code == 403, path
    assert (await owner.get("/members")).text.count("status active") == 2


async def test_personal_keys_are_the_users_own(
    session: AsyncSession, owner: ConsoleUser, member: ConsoleUser
) -> None:
    # A member, too, manages their own keys (they carry only a member's rights).
    created = await member.post(
        "/personal-keys",
        {"name": "Nightly export", "scopes": ["reports:read"], "expires_in": "30d"},
    )
    assert created.status_code == 200
    [secret] = KEY_RE.findall(created.text)
    listing = await member.get("/personal-keys")
    assert "Nightly export" in listing.text
    assert secret not in listing.text
    assert "Console session" not in listing.text
    # Not the owner's.
    assert "Nightly export" not in (await owner.get("/personal-keys")).text
    key_id = re.search(r"/personal-keys/([0-9a-f-]{36})/revoke", listing.text)
    assert key_id
    assert (await owner.post(f"/personal-keys/{key_id.group(1)}/revoke")).status_code == 404
    revoked = await member.post(f"/personal-keys/{key_id.group(1)}/revoke")
    assert revoked.status_code == 303
    assert "status revoked" in (await member.get("/personal-keys")).text


async def test_a_bad_personal_key_is_refused_inline(owner: ConsoleUser) -> None:
    page = await owner.post("/personal-keys", {"name": "", "scopes": ["nothing:here"]})
    assert page.status_code == 422
    assert 'role="alert"' in page.text


async def test_the_audit_log_says_who_did_what_and_filters(
    owner: ConsoleUser, member: ConsoleUser
) -> None:
    await owner.post(
        "/applications", {"name": "Zapier sync", "developer_email": "dev@partner.example"}
    )
    page = await owner.get("/audit")
    assert "application.created" in page.text
    assert owner.user.email in page.text
    assert "name: Zapier sync" in page.text
    filtered = await owner.get("/audit?action=key.revoked")
    assert "application.created" not in filtered.text.split('id="audit"')[1]
    # Members read it too (every read scope is theirs), as on the API.
    assert "application.created" in (await member.get("/audit")).text


async def test_another_accounts_members_are_not_reachable(
    session: AsyncSession, owner: ConsoleUser, sign_in: SignIn
) -> None:
    stranger_tenant = await create_tenant(session, name="Initech")
    other = await create_user(session, accounts={stranger_tenant.account.id: Role.member})
    assert (await owner.get(f"/members/{other.id}/remove")).status_code == 404
    assert (await owner.post(f"/members/{other.id}/remove")).status_code == 404
    assert (await owner.post(f"/members/{other.id}/role", {"role": "owner"})).status_code == 404

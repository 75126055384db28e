"""A user in several accounts switches between them; a session ends when it should."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from consoles import ConsoleUser, SignIn
from factories import Tenant, create_tenant, create_user
from keyservice.accounts import service as accounts_service
from keyservice.invalidations import apply_committed
from keyservice.models import Role


async def _two_accounts(
    session: AsyncSession, sign_in: SignIn
) -> tuple[ConsoleUser, Tenant, Tenant]:
    first = await create_tenant(session, name="Northwind")
    second = await create_tenant(session, name="Contoso")
    user = await create_user(
        session, accounts={first.account.id: Role.admin, second.account.id: Role.member}
    )
    return await sign_in(user), first, second


async def test_a_user_in_several_accounts_switches_between_them(
    session: AsyncSession, sign_in: SignIn
) -> None:
    visitor, first, second = await _two_accounts(session, sign_in)
    page = await visitor.get("/applications")
    # Accounts are offered by name; the first is chosen until the user switches.
    assert "Northwind (admin)" in page.text
    assert "Contoso (member)" in page.text
    assert f'value="{second.account.id}" selected' in page.text
    assert "Create an app" not in page.text  # a member of Contoso reads only

    switched = await visitor.post(
        "/account", {"account_id": str(first.account.id), "back": "/applications"}
    )
    assert switched.status_code == 303
    assert switched.headers["location"] == "/console/applications"
    page = await visitor.get("/applications")
    assert f'value="{first.account.id}" selected' in page.text
    assert "Create an app" in page.text  # an admin of Northwind


async def test_switching_to_an_account_the_user_is_not_in_is_refused(
    session: AsyncSession, sign_in: SignIn
) -> None:
    visitor, _, _ = await _two_accounts(session, sign_in)
    stranger = await create_tenant(session, name="Initech")
    response = await visitor.post("/account", {"account_id": str(stranger.account.id)})
    assert response.status_code == 404
    assert "ks_account" not in response.headers.get("set-cookie", "")
    # A forged cookie naming it falls back to one of the user's own accounts.
    visitor.client.cookies.set(
        "ks_account", str(stranger.account.id), domain="keyservice.test", path="/console"
    )
    page = await visitor.get("/applications")
    assert page.status_code == 200
    assert "Initech" not in page.text


async def test_a_user_without_an_account_is_told_so(session: AsyncSession, sign_in: SignIn) -> None:
    visitor = await sign_in(await create_user(session, accounts={}))
    page = await visitor.get("/applications")
    assert page.status_code == 200
    assert "You belong to no account yet" in page.text


async def test_setting_a_password_from_the_server_ends_the_users_sessions(
    app: FastAPI, session: AsyncSession, owner: ConsoleUser
) -> None:
    assert (await owner.get("/applications")).status_code == 200
    await accounts_service.set_password(
        session, email=owner.user.email, password="a brand new password"
    )
    await session.commit()
    # What the invalidation's NOTIFY does in a server (the command runs in another process).
    apply_committed(session, app.state.key_cache)
    page = await owner.get("/applications")
    assert page.status_code == 303
    assert "/console/sign-in" in page.headers["location"]


async def test_a_malformed_page_address_is_a_page_not_found(owner: ConsoleUser) -> None:
    for path in ("/applications/not-a-uuid", "/applications/00000000-0000-0000-0000-000000000000"):
        response = await owner.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")

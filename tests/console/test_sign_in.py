"""Signing in to the console: the API's login behind a cookie, CSRF on every form."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from consoles import CONSOLE, ConsoleUser, csrf_of
from factories import Tenant
from keyservice.accounts import service as accounts_service


async def _with_password(session: AsyncSession, tenant: Tenant, password: str) -> str:
    await accounts_service.set_password(session, email=tenant.owner.email, password=password)
    await session.commit()
    return tenant.owner.email


async def _sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    form = await client.get(f"{CONSOLE}/sign-in")
    return await client.post(
        f"{CONSOLE}/sign-in",
        data={"email": email, "password": password, "csrf_token": csrf_of(form.text)},
    )


async def test_a_page_without_a_session_leads_to_sign_in_and_back(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.get(f"{CONSOLE}/applications?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == f"{CONSOLE}/sign-in?next=/console/applications%3Fx%3D1"


async def test_sign_in_sets_a_strict_http_only_cookie_scoped_to_the_console(
    app: FastAPI, session: AsyncSession, tenant_for_console: Tenant
) -> None:
    email = await _with_password(session, tenant_for_console, "correct horse battery")
    async with client_for(app) as client:
        response = await _sign_in(client, email, "correct horse battery")
        assert response.status_code == 303
        cookie = next(
            v
            for k, v in response.headers.multi_items()
            if k == "set-cookie" and v.startswith("ks_session=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/console" in cookie
        # The session key is never in a URL.
        assert "ks_" not in response.headers["location"]
        page = await client.get(f"{CONSOLE}/applications")
    assert page.status_code == 200
    assert tenant_for_console.account.name in page.text


async def test_cookies_are_secure_outside_development(
    make_app: object, session: AsyncSession, tenant_for_console: Tenant
) -> None:
    from keyservice.config import Mode

    app = make_app(mode=Mode.production, encryption_key=None)  # type: ignore[operator]
    email = await _with_password(session, tenant_for_console, "correct horse battery")
    # Over https, as a production deployment is reached (a browser sends no Secure cookie back
    # over http).
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://keyservice.test") as client:
        form = await client.get(f"{CONSOLE}/sign-in")
        assert "Secure" in form.headers["set-cookie"]
        response = await _sign_in(client, email, "correct horse battery")
    assert response.status_code == 303
    session_cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and "ks_session=" in v
    )
    assert "Secure" in session_cookie


async def test_a_wrong_password_and_an_unknown_email_get_the_same_answer(
    app: FastAPI, session: AsyncSession, tenant_for_console: Tenant
) -> None:
    email = await _with_password(session, tenant_for_console, "correct horse battery")
    async with client_for(app) as client:
        wrong = await _sign_in(client, email, "not it")
        unknown = await _sign_in(client, "nobody@example.com", "not it")
    assert wrong.status_code == unknown.status_code == 401
    assert "The email or the password is not correct" in wrong.text
    assert "The email or the password is not correct" in unknown.text
    assert "set-cookie" not in {k for k, v in wrong.headers.multi_items() if "ks_session" in v}


async def test_sign_in_without_its_csrf_token_is_refused(
    app: FastAPI, session: AsyncSession, tenant_for_console: Tenant
) -> None:
    email = await _with_password(session, tenant_for_console, "correct horse battery")
    async with client_for(app) as client:
        response = await client.post(
            f"{CONSOLE}/sign-in",
            data={"email": email, "password": "correct horse battery", "csrf_token": "forged"},
        )
    assert response.status_code == 403
    assert "ks_session" not in response.headers.get("set-cookie", "")


async def test_a_form_without_the_csrf_token_changes_nothing(owner: ConsoleUser) -> None:
    response = await owner.client.post(
        f"{CONSOLE}/applications",
        data={"name": "Forged", "developer_email": "dev@partner.example"},
    )
    assert response.status_code == 403
    assert "The form has expired" in response.text
    listing = await owner.get("/applications")
    assert "Forged" not in listing.text


async def test_every_page_has_a_strict_content_security_policy(owner: ConsoleUser) -> None:
    for path in ("/applications", "/applications/new", "/sign-in", "/nowhere"):
        response = await owner.get(path)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text  # no inline script


async def test_sign_out_ends_the_session_everywhere(owner: ConsoleUser) -> None:
    cookie = owner.client.cookies.get("ks_session")
    response = await owner.post("/sign-out")
    assert response.status_code == 303
    # The same cookie, replayed, no longer works: the session key was revoked.
    owner.client.cookies.set("ks_session", cookie or "", domain="keyservice.test", path=CONSOLE)
    again = await owner.get("/applications")
    assert again.status_code == 303
    assert "/sign-in" in again.headers["location"]


async def test_the_console_can_be_turned_off(make_app: object) -> None:
    app = make_app(console_enabled=False)  # type: ignore[operator]
    async with client_for(app) as client:
        response = await client.get(f"{CONSOLE}/sign-in")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_console_is_served_where_the_prefix_says(make_app: object) -> None:
    app = make_app(console_prefix="/settings/api")  # type: ignore[operator]
    async with client_for(app) as client:
        response = await client.get("/settings/api/sign-in")
    assert response.status_code == 200
    assert 'action="/settings/api/sign-in"' in response.text


async def test_the_sign_in_page_sends_a_signed_in_user_on(owner: ConsoleUser) -> None:
    response = await owner.get("/sign-in?next=/console/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/keys"


async def test_sign_in_never_sends_anyone_to_another_site(app: FastAPI) -> None:
    async with client_for(app) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/console//evil.example"):
            page = await client.get(f"{CONSOLE}/sign-in", params={"next": target})
            assert 'name="next" value="/"' in page.text, target

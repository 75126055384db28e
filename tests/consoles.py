"""The console's fixtures: signed-in HTTP clients on the test's transaction, and a real browser
(the OS's Chromium, driven by Playwright) on a real keyservice server."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

import secrets_seen
from conftest import client_for
from factories import Tenant, create_tenant, create_user
from keyservice.console.web import SESSION_COOKIE, csrf_token_for
from keyservice.keys import service as keys_service
from keyservice.models import KeyKind, Role, User, utcnow
from keyservice.scopes import catalogue
from keyservice.security import Environment
from servers import Server, cli_env, serving

CONSOLE = "/console"


@dataclass
class ConsoleUser:
    """A browser's view of the console, signed in: its cookie, and its pages' CSRF token."""

    client: httpx.AsyncClient
    csrf: str
    user: User

    async def get(self, path: str, **kwargs: object) -> httpx.Response:
        return await self.client.get(CONSOLE + path, **kwargs)  # type: ignore[arg-type]

    async def post(self, path: str, data: Mapping[str, object] | None = None) -> httpx.Response:
        """A form submitted from a console page (its CSRF token included)."""
        return await self.client.post(
            CONSOLE + path, data={"csrf_token": self.csrf, **(data or {})}
        )


SignIn = Callable[[User], Awaitable[ConsoleUser]]


@pytest.fixture
async def sign_in(app: FastAPI, session: AsyncSession) -> AsyncIterator[SignIn]:
    """Sign a user in as the console's sign-in does (a session key in the cookie), without the
    password's hashing time."""
    clients: list[httpx.AsyncClient] = []

    async def signed_in(user: User) -> ConsoleUser:
        key, secret = keys_service.new_key(
            prefix="ks",
            kind=KeyKind.session,
            name="Console session",
            environment=Environment.live,
            scopes=catalogue(app.state.settings.scopes),
            expires_at=utcnow() + timedelta(hours=1),
            user_id=user.id,
        )
        session.add(key)
        await session.commit()
        secrets_seen.remember(secret)
        client = client_for(app)
        client.cookies.set(SESSION_COOKIE, secret, domain="keyservice.test", path=CONSOLE)
        clients.append(client)
        return ConsoleUser(client=client, csrf=csrf_token_for(secret), user=user)

    yield signed_in
    for client in clients:
        await client.aclose()


@pytest.fixture
async def tenant_for_console(session: AsyncSession) -> Tenant:
    return await create_tenant(session)


@pytest.fixture
async def owner(tenant_for_console: Tenant, sign_in: SignIn) -> ConsoleUser:
    return await sign_in(tenant_for_console.owner)


@pytest.fixture
async def member(tenant_for_console: Tenant, session: AsyncSession, sign_in: SignIn) -> ConsoleUser:
    user = await create_user(session, accounts={tenant_for_console.account.id: Role.member})
    return await sign_in(user)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = CSRF_RE.search(page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


# The browser

CHROMIUM = shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None
)
# Headless, and without the background connections that a closed network refuses.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class ConsoleServer:
    server: Server
    directory: Path
    email: str
    password: str
    owner_key: str

    @property
    def url(self) -> str:
        return self.server.base_url + CONSOLE


PASSWORD_RE = re.compile(r"Sign in as (\S+) with the password[^\n]*\n[^\n]*\n\n\s+(\S+)\n")
OWNER_KEY_RE = re.compile(r"ks_live_[0-9A-Za-z]{38}")


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """``keyservice serve`` as ``make run`` starts it on an empty database: the first owner,
    their password and owner key come from what it prints."""
    directory = tmp_path_factory.mktemp("console")
    with serving(directory, cli_env(directory)) as server:
        output = server.output()
        match = PASSWORD_RE.search(output)
        assert match, output
        key = OWNER_KEY_RE.search(output)
        assert key, output
        secrets_seen.remember(match.group(2))
        secrets_seen.remember(key.group(0))
        yield ConsoleServer(
            server=server,
            directory=directory,
            email=match.group(1),
            password=match.group(2),
            owner_key=key.group(0),
        )


# Per module: Playwright's sync API runs an event loop of its own in this thread while it is
# open, and other tests' asyncio.run() must not meet it.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the suite's screenshots go: docs/console with CONSOLE_SCREENSHOTS=docs/console (as
    ``make screenshots`` runs it), a temporary folder otherwise."""
    target = os.environ.get("CONSOLE_SCREENSHOTS")
    if target:
        path = Path(target)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_directory(tmp_path_factory)


def new_id() -> str:
    return uuid.uuid4().hex[:8]

"""The console's main path in a real browser against ``keyservice serve``: an admin creates an
application, generates a key and copies it while it is shown, the key verifies through
/v1/verify and its requests appear on the usage graph; the key is rotated and revoked, and is
refused. A member sees no write control and their forged form is refused; a form without its
CSRF token is refused; another account's objects cannot be reached by URL."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

import secrets_seen
from consoles import ConsoleServer
from servers import cli_env

VIEWPORT = {"width": 1280, "height": 800}


def sign_in(browser: Any, server: ConsoleServer, email: str, password: str) -> Any:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    page.goto(server.url + "/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/applications")
    return page


def verify(
    server: ConsoleServer,
    key: str,
    scope: str = "contacts:read",
    endpoint: str = "GET /v1/contacts",
) -> httpx.Response:
    return httpx.post(
        server.server.base_url + "/v1/verify",
        json={"key": key, "scopes": [scope], "endpoint": endpoint},
    )


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=name).click()


def test_from_a_new_application_to_a_revoked_key(
    browser: Any, console_server: ConsoleServer, screenshots: Path
) -> None:
    page = sign_in(browser, console_server, console_server.email, console_server.password)
    # An application, from the applications tab.
    page.get_by_role("link", name="Create an app").first.click()
    page.get_by_label("Name").fill("Walkthrough sync")
    page.get_by_label("Developer email").fill("dev@partner.example")
    page.get_by_label("contacts:read").check()
    page.get_by_label("deals:read").check()
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url("**/console/applications/*")

    # A key for it, read once from the page.
    page.get_by_role("link", name="Issue a key").click()
    page.get_by_label("Name").fill("Production Integration")
    page.get_by_label("contacts:read").check()
    page.get_by_label("90 days").check()
    page.get_by_role("button", name="Generate key").click()
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    secret = page.get_by_label("The API key").input_value()
    secrets_seen.remember(secret)
    page.screenshot(path=screenshots / "key-created.png", full_page=True)
    assert verify(console_server, secret).json()["valid"] is True
    # A few more: allowed on two endpoints, and refused for a scope the key lacks.
    for n in range(11):
        verify(console_server, secret, endpoint=("GET /v1/contacts", "POST /v1/contacts")[n % 2])
    for _ in range(3):
        assert verify(console_server, secret, scope="deals:write").json()["valid"] is False
    page.get_by_role("link", name="I have copied it").click()
    assert secret not in page.content()

    # The verifications on the usage page and its graph (usage is written about once a second).
    nav(page, "Usage")
    this_hour = page.locator(".stat .value").first
    deadline = time.monotonic() + 30
    while this_hour.inner_text() != "15":
        assert time.monotonic() < deadline, "the verifications never reached the usage page"
        time.sleep(0.5)
        page.reload()
    expect(page.locator("#usage-chart canvas")).to_have_count(1)
    expect(page.locator(".uplot")).to_be_visible()
    page.screenshot(path=screenshots / "usage.png", full_page=True)
    page.get_by_text("The numbers").click()
    expect(page.get_by_role("cell", name="12", exact=True).first).to_be_visible()
    expect(page.get_by_role("cell", name="3", exact=True).first).to_be_visible()

    # The key's list, filtered, then the key.
    nav(page, "API keys")
    page.get_by_label("Environment").select_option("live")
    # htmx swaps the table in place and puts the filter in the address.
    expect(page).to_have_url(re.compile(r"environment=live"))
    expect(page.get_by_role("link", name="Production Integration")).to_be_visible()
    page.screenshot(path=screenshots / "keys.png", full_page=True)
    page.get_by_role("link", name="Production Integration").click()

    # Rotated at once: the old secret is refused, the new one works.
    page.get_by_role("link", name="Rotate").click()
    expect(page.get_by_text("must be given the new one")).to_be_visible()
    page.screenshot(path=screenshots / "key-rotate.png", full_page=True)
    page.get_by_role("button", name="Rotate key").click()
    rotated = page.get_by_label("The API key").input_value()
    secrets_seen.remember(rotated)
    assert rotated != secret
    assert verify(console_server, secret).json()["valid"] is False
    assert verify(console_server, rotated).json()["valid"] is True

    # Revoked: refused everywhere.
    page.get_by_role("link", name="I have copied it").click()
    page.get_by_role("link", name="Revoke").click()
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_text("refused everywhere from now on")).to_be_visible()
    answer = verify(console_server, rotated).json()
    assert answer["valid"] is False
    assert answer["code"] == "REVOKED"
    assert page.errors == []


def test_a_member_sees_no_write_control_and_forged_forms_are_refused(
    browser: Any, console_server: ConsoleServer, tmp_path: Path
) -> None:
    owner_key = {"Authorization": f"Bearer {console_server.owner_key}"}
    base = console_server.server.base_url
    httpx.post(
        base + "/v1/applications",
        headers=owner_key,
        json={"name": "Read-only demo", "developer_email": "dev@partner.example"},
    ).raise_for_status()
    added = httpx.post(
        base + "/v1/account/members",
        headers=owner_key,
        json={"email": "mo@example.com", "role": "member", "password": "a member's password"},
    )
    assert added.status_code == 201, added.text
    page = sign_in(browser, console_server, "mo@example.com", "a member's password")
    for section in ("Applications", "API keys", "Webhooks", "Members"):
        nav(page, section)
        buttons = {b.inner_text() for b in page.locator("main button:visible").all()}
        assert not buttons - {"Filter", "Show", "Choose"}, (section, buttons)
        for label in ("Create an app", "Generate a key", "Add an endpoint", "Add a member"):
            assert not page.get_by_role("link", name=label).count()
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Applications").click()
    page.get_by_role("link", name="Read-only demo").click()
    application_url = page.url
    token = page.locator('input[name="csrf_token"]').first.input_value()

    # A forged form, with the member's own valid token: refused by the server.
    forged = page.request.post(
        application_url + "/delete", form={"csrf_token": token}, max_redirects=0
    )
    assert forged.status == 403
    # A form without a CSRF token, even the owner's: refused.
    owner_page = sign_in(browser, console_server, console_server.email, console_server.password)
    no_token = owner_page.request.post(application_url + "/delete", form={}, max_redirects=0)
    assert no_token.status == 403
    owner_page.goto(application_url)
    expect(owner_page.get_by_role("heading", name="Read-only demo")).to_be_visible()

    # Another account's owner, signed in, reaches none of it by URL.
    env = cli_env(console_server.directory)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "keyservice",
            "bootstrap",
            "--account-name",
            "Initech",
            "--email",
            "other@example.com",
        ],
        env=env,
        cwd=console_server.directory,
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "keyservice",
            "set-password",
            "--email",
            "other@example.com",
            "--password-stdin",
        ],
        env=env,
        cwd=console_server.directory,
        input=b"another long password\n",
        check=True,
        capture_output=True,
        timeout=60,
    )
    stranger = sign_in(browser, console_server, "other@example.com", "another long password")
    response = stranger.goto(application_url)
    assert response.status == 404
    expect(stranger.get_by_role("heading", name="Not found")).to_be_visible()
    assert "Read-only demo" not in stranger.content()

"""The other pages in a real browser: members and an invitation, personal keys, the audit log
(webhooks have a module of their own); every page fits a phone's width and logs no error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

import secrets_seen
from consoles import ConsoleServer

PAGES = (
    "/applications",
    "/applications/new",
    "/keys",
    "/keys/new",
    "/usage",
    "/usage?granularity=day",
    "/webhooks",
    "/webhooks/new",
    "/members",
    "/personal-keys",
    "/audit",
)


def signed_in(browser: Any, server: ConsoleServer, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors
    page.goto(server.url + "/sign-in")
    page.get_by_label("Email").fill(server.email)
    page.get_by_label("Password").fill(server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/applications")
    return page


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=name).click()


def test_members_an_invitation_personal_keys_and_the_audit_log(
    browser: Any, console_server: ConsoleServer, screenshots: Path
) -> None:
    page = signed_in(browser, console_server, viewport={"width": 1280, "height": 800})
    nav(page, "Members")
    page.locator("#f-email").fill("dana@example.com")
    page.get_by_label("Role", exact=True).select_option("admin")
    page.get_by_label("Initial password").fill("correct horse battery")
    page.get_by_role("button", name="Add member").click()
    expect(page.get_by_text("Member added")).to_be_visible()
    expect(page.get_by_role("cell", name="dana@example.com", exact=True)).to_be_visible()
    page.screenshot(path=screenshots / "members.png", full_page=True)

    nav(page, "Personal keys")
    page.get_by_label("Name").fill("Reporting script")
    page.get_by_label("reports:read").check()
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("The API key").input_value()
    secrets_seen.remember(secret)
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    page.screenshot(path=screenshots / "personal-keys.png", full_page=True)

    nav(page, "Audit log")
    expect(page.get_by_role("cell", name="member.added", exact=True)).to_be_visible()
    page.get_by_label("Action").select_option("key.created")
    # htmx swaps the table in place.
    expect(page.get_by_role("cell", name="member.added", exact=True)).to_have_count(0)
    expect(page.get_by_role("cell", name="key.created", exact=True).first).to_be_visible()
    page.screenshot(path=screenshots / "audit.png", full_page=True)
    assert page.errors == []


@pytest.mark.parametrize("width", [390, 1280])
def test_every_page_fits_the_screen_and_logs_no_error(
    browser: Any, console_server: ConsoleServer, width: int
) -> None:
    page = signed_in(browser, console_server, viewport={"width": width, "height": 844})
    for path in PAGES:
        response = page.goto(console_server.url + path)
        assert response.status == 200, path
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, (path, overflow)
    assert page.errors == []

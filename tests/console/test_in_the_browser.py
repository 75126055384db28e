"""The console in a real browser (the OS's Chromium) against ``keyservice serve``, as a newcomer
meets it after ``make run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from consoles import ConsoleServer, new_id


def signed_in_page(browser: Any, console_server: ConsoleServer, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    page.goto(console_server.url + "/")
    page.get_by_label("Email").fill(console_server.email)
    page.get_by_label("Password").fill(console_server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/applications")
    return page


def test_a_newcomer_signs_in_with_the_printed_password_and_creates_an_app(
    browser: Any, console_server: ConsoleServer, screenshots: Path
) -> None:
    page = signed_in_page(browser, console_server, viewport={"width": 1280, "height": 800})
    errors: list[str] = []

    def on_message(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_message)
    expect(page.get_by_text("No applications yet")).to_be_visible()
    page.get_by_role("link", name="Create an app").first.click()
    name = f"Zapier sync {new_id()}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Developer email").fill("dev@partner.example")
    page.get_by_label("Description").fill("Two-way sync of contacts")
    page.get_by_label("contacts:read").check()
    page.get_by_role("button", name="Create app").click()
    page.wait_for_url("**/console/applications/*")
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.get_by_text("Application created")).to_be_visible()
    page.screenshot(path=screenshots / "application.png", full_page=True)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Applications").click()
    expect(page.get_by_role("link", name=name)).to_be_visible()
    page.screenshot(path=screenshots / "applications.png", full_page=True)
    # No script was refused by the Content-Security-Policy, nothing failed.
    assert errors == []


def test_a_form_with_mistakes_shows_them_next_to_their_fields(
    browser: Any, console_server: ConsoleServer
) -> None:
    page = signed_in_page(browser, console_server)
    page.goto(console_server.url + "/applications/new")
    page.get_by_label("Developer email").fill("not an email")
    page.get_by_role("button", name="Create app").click()
    expect(page.get_by_role("alert").get_by_text("The form has errors")).to_be_visible()
    expect(page.locator("#e-developer_email")).to_be_visible()
    assert page.get_by_label("Name").get_attribute("aria-invalid") == "true"


def test_the_console_fits_a_phone(browser: Any, console_server: ConsoleServer) -> None:
    page = signed_in_page(browser, console_server, viewport={"width": 390, "height": 844})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390

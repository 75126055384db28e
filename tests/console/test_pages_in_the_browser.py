"""The other pages in a real browser: webhooks with a test event, members and an invitation,
personal keys, the audit log; every page fits a phone's width and logs no error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
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


class _Hooks(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"received": true}')

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hooks() -> Iterator[str]:
    """A receiver for webhooks on a loopback port (development mode lets the server reach it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks"
    server.shutdown()


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


def test_a_webhook_endpoint_with_a_test_event_and_its_delivery_log(
    browser: Any, console_server: ConsoleServer, hooks: str, screenshots: Path
) -> None:
    page = signed_in(browser, console_server, viewport={"width": 1280, "height": 800})
    nav(page, "Webhooks")
    expect(page.get_by_text("No endpoints yet")).to_be_visible()
    page.get_by_role("link", name="Add an endpoint").first.click()
    page.get_by_label("URL").fill(hooks)
    page.get_by_label("Description").fill("Our CRM's receiver")
    page.get_by_label("key.created").check()
    page.get_by_label("key.revoked").check()
    page.get_by_label("application.created").check()
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.get_by_label("The signing secret").input_value()
    secrets_seen.remember(secret)
    assert secret.startswith("whsec_")
    page.get_by_role("link", name="I have copied it").click()

    # The test event, swapped in place by htmx.
    page.get_by_label("Event type").select_option("key.created")
    page.get_by_role("button", name="Send test event").click()
    result = page.locator("#test-result")
    result.get_by_text("Delivered").wait_for()
    assert "webhook-signature: v1," in result.inner_text()
    assert secret not in page.content()
    page.screenshot(path=screenshots / "webhook-test.png", full_page=True)

    # An event of the account: it is delivered, and the log shows its attempt.
    httpx.post(
        console_server.server.base_url + "/v1/applications",
        headers={"Authorization": f"Bearer {console_server.owner_key}"},
        json={"name": "Webhook demo", "developer_email": "dev@partner.example"},
    ).raise_for_status()
    page.get_by_role("link", name="Delivery log").click()
    log = page.locator("#deliveries")
    for _ in range(60):  # delivered within a second or so: a bound, not a measurement
        if log.get_by_text("HTTP 200").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(log.get_by_text("application.created").first).to_be_visible()
    expect(log.get_by_text("HTTP 200").first).to_be_visible()
    page.screenshot(path=screenshots / "webhook-deliveries.png", full_page=True)
    nav(page, "Webhooks")
    page.screenshot(path=screenshots / "webhooks.png", full_page=True)
    assert page.errors == []


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

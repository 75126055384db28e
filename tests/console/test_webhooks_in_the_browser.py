"""The webhooks pages in a real browser (the OS's Chromium) against ``keyservice serve``, whose
delivery worker sends to a real receiver: an endpoint added and its secret copied once, a test
event's attempt shown in place and verified by the receiver with that secret, real deliveries in
the log with every attempt, one redelivered, the log filtered in place, and a replay."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import secrets_seen
from consoles import ConsoleServer
from receivers import Answer, Receiver
from servers import free_port

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


class ReceiverThread:
    """The suite's webhook receiver, on an event loop of its own: Playwright's sync API holds
    this thread's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.receiver: Receiver = self._run(self._start())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def _start(self) -> Receiver:
        receiver = Receiver()
        await receiver.start()
        return receiver

    def stop(self) -> None:
        self._run(self.receiver.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = ReceiverThread()
    yield running.receiver
    running.stop()


def signed_in_page(browser: Any, console_server: ConsoleServer, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    page.goto(console_server.url + "/")
    page.get_by_label("Email").fill(console_server.email)
    page.get_by_label("Password").fill(console_server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/applications")
    return page


def console_errors(page: Any) -> list[str]:
    """The page's console errors from now on (a script refused by the CSP shows up there)."""
    errors: list[str] = []

    def on_message(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_message)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def api(console_server: ConsoleServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A call of the product's backend, with the owner key ``make run`` printed."""
    response = httpx.post(
        console_server.server.base_url + path,
        headers={"Authorization": f"Bearer {console_server.owner_key}"},
        json=body,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def until(check: Any, page: Any, timeout: float = 20.0) -> None:
    """Reload ``page`` until ``check()`` holds: the delivery worker sends on its own time."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the delivery log did not show it in time"
        time.sleep(0.3)
        page.reload()


def fits(page: Any) -> bool:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    viewport: int = page.viewport_size["width"]
    return width <= viewport


def test_an_endpoint_is_added_tested_and_its_deliveries_read(
    browser: Any, console_server: ConsoleServer, receiver: Receiver, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page = signed_in_page(
        browser,
        console_server,
        viewport=DESKTOP,
        timezone_id="Europe/Paris",
        permissions=["clipboard-read", "clipboard-write"],
    )
    errors = console_errors(page)

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Webhooks").click()
    page.wait_for_url("**/console/webhooks")
    expect(page.get_by_role("heading", name="No endpoints yet")).to_be_visible()
    page.get_by_role("link", name="Add an endpoint").click()

    # The form: a URL, a description, events grouped as the catalogue has them.
    page.get_by_label("URL").fill(receiver.url)
    page.get_by_label("Description").fill("CRM sync service")
    for name in ("application.created", "key.revoked", "deal.won"):
        page.get_by_label(name).check()
    page.get_by_role("button", name="Add endpoint").click()

    # The secret, once, with its copy button.
    expect(page.get_by_text("it will not be shown again")).to_be_visible()
    secret: str = page.get_by_label("The signing secret").input_value()
    assert secret.startswith("whsec_")
    secrets_seen.remember(secret)
    receiver.secrets.append(secret)
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.get_by_role("link", name="I have copied it").click()
    page.wait_for_url(re.compile(r"/console/webhooks/[0-9a-f-]{36}$"))
    assert secret not in page.content()
    endpoint_url = page.url

    # A test event: the attempt appears in place (no page load), verified with that secret.
    page.evaluate("window.notReloaded = true")
    page.get_by_label("Event type").select_option("deal.won")
    page.get_by_role("button", name="Send test event").click()
    result = page.locator("#test-result")
    expect(result.get_by_text("Delivered")).to_be_visible()
    expect(result).to_contain_text("HTTP 200")
    expect(result).to_contain_text("webhook-signature: v1,")
    assert page.evaluate("window.notReloaded") is True
    assert page.url == endpoint_url
    tested = receiver.received[-1]
    assert tested.verified_by == [secret]
    assert tested.payload["type"] == "deal.won"
    expect(result.locator("pre.sent")).to_contain_text(tested.headers["webhook-id"])
    page.screenshot(path=screenshots / "webhook-test.png", full_page=True)

    # An endpoint that nobody listens at, to show what failing looks like.
    unheard = api(
        console_server,
        "/v1/webhooks/endpoints",
        {"url": f"http://127.0.0.1:{free_port()}/hooks", "description": "Old reporting job"},
    )
    secrets_seen.remember(unheard["secret"])
    # Real events: the first delivery is refused, then the receiver recovers.
    receiver.answers.append(Answer(503, body=b'{"error": "deploy in progress, retry later"}'))
    api(console_server, "/v1/events", {"type": "deal.won", "data": {"deal_id": "d_1042"}})
    page.get_by_role("link", name="Delivery log").click()
    page.wait_for_url("**/deliveries")
    messages = page.locator("article.message")
    deal = messages.filter(has_text="deal.won")
    until(lambda: "HTTP 503" in page.content(), page)
    expect(deal).to_contain_text("deploy in progress")
    expect(deal).to_contain_text("Next attempt")
    api(
        console_server,
        "/v1/applications",
        {"name": "Billing export", "developer_email": "dev@partner.example"},
    )
    created = messages.filter(has_text="application.created")
    until(lambda: created.get_by_text("HTTP 200").count() == 1, page)

    # Redeliver the refused one now rather than wait for its retry.
    deal.get_by_role("button", name="Redeliver").click()
    page.wait_for_url("**saved=redelivered*")
    expect(page.get_by_text("being delivered again")).to_be_visible()
    until(lambda: deal.locator("h2 .status.delivered").count() == 1, page)
    assert deal.locator("table.attempts tbody tr").count() >= 2
    assert all(r.verified_by == [secret] for r in receiver.received)
    page.screenshot(path=screenshots / "webhook-deliveries.png", full_page=True)

    # Filters swap the log in place and go into the address.
    page.evaluate("window.notReloaded = true")
    page.get_by_label("Event type").select_option("application.created")
    expect(messages.filter(has_text="deal.won")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"event_type=application\.created"))
    assert page.evaluate("window.notReloaded") is True

    # Replay: the picked time is the browser's (Paris), and the page says so.
    page.get_by_text("Replay failed messages").click()
    expect(page.get_by_text("In your time zone (Europe/Paris")).to_be_visible()
    assert page.get_by_label("Failed since").input_value()  # a day ago, filled in
    page.get_by_role("button", name="Replay failures").click()
    expect(page.get_by_text("No failed message since then")).to_be_visible()

    # The list, with each endpoint's health.
    page.get_by_role("link", name="Webhooks").first.click()
    page.wait_for_url("**/console/webhooks")
    until(lambda: page.locator("table.endpoints .status.failing").count() == 1, page)
    expect(page.get_by_role("link", name=receiver.url)).to_be_visible()
    page.screenshot(path=screenshots / "webhooks.png", full_page=True)

    # At a phone's width, nothing scrolls sideways but the tables inside their frames.
    page.set_viewport_size(PHONE)
    for url in (page.url, endpoint_url + "/deliveries", endpoint_url + "/edit", endpoint_url):
        page.goto(url)
        assert fits(page), url
    page.get_by_role("button", name="Send test event").click()
    expect(page.locator("#test-result").get_by_text("Delivered")).to_be_visible()
    assert fits(page)
    assert errors == []

"""The webhooks pages: endpoints and their events, the secret once, a test event checked by a real
receiver, the delivery log of real deliveries with every attempt, redelivery and replay; members
read, other accounts see nothing."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

import secrets_seen
from conftest import Clock
from consoles import CONSOLE, ConsoleUser, SignIn
from factories import Tenant, create_application, create_tenant
from keyservice.console.pages import webhooks as webhooks_pages
from keyservice.models import WebhookEndpoint, utcnow
from keyservice.webhooks.delivery import Delivery
from keyservice.webhooks.ssrf import Policy
from receivers import Answer, Receiver, endpoint_for
from servers import free_port

SECRET_RE = re.compile(r'id="secret" type="text" readonly value="(whsec_[A-Za-z0-9+/=]+)"')
MESSAGE_RE = re.compile(r"/deliveries/([0-9a-f-]{36})/redeliver")


async def _endpoint(owner: ConsoleUser, url: str, **fields: object) -> tuple[str, str]:
    """An endpoint added through the form: its id, and the secret its answer showed once."""
    page = await owner.post("/webhooks", {"url": url, **fields})
    assert page.status_code == 200, page.text
    [secret] = SECRET_RE.findall(page.text)
    secrets_seen.remember(secret)
    assert "it will not be shown again" in page.text
    match = re.search(r'href="/console/webhooks/([0-9a-f-]{36})"', page.text)
    assert match
    return match.group(1), secret


async def _receiving(owner: ConsoleUser, receiver: Receiver, **fields: object) -> str:
    endpoint_id, secret = await _endpoint(owner, receiver.url, **fields)
    receiver.secrets.append(secret)
    return endpoint_id


async def test_the_empty_list_says_what_webhooks_are_for_and_how_to_start(
    owner: ConsoleUser, member: ConsoleUser
) -> None:
    page = await owner.get("/webhooks")
    assert "No endpoints yet" in page.text
    assert "send it a test event" in page.text
    assert 'href="/console/webhooks/new"' in page.text
    assert 'href="/console/webhooks/new"' not in (await member.get("/webhooks")).text


async def test_the_form_offers_every_event_type_grouped(owner: ConsoleUser) -> None:
    page = await owner.get("/webhooks/new")
    assert page.status_code == 200
    for group in ("API keys", "Applications", "Usage", "Your product&#39;s events"):
        assert group in page.text, group
    for name in ("key.created", "key.revoked", "usage.threshold", "contact.created", "deal.won"):
        assert f'name="event_types" value="{name}"' in page.text, name
    assert "None chosen: every event" in page.text


async def test_add_an_endpoint_and_its_secret_is_shown_once(
    owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _receiving(
        owner, receiver, description="CRM sync", event_types=["key.created", "deal.won"]
    )
    listing = await owner.get("/webhooks")
    assert receiver.url in listing.text
    assert "CRM sync" in listing.text
    assert "whsec_" not in listing.text
    page = await owner.get(f"/webhooks/{endpoint_id}")
    assert "deal.won" in page.text
    assert "whsec_" not in page.text
    # Its events preselect the test event's type.
    assert '<option value="key.created" selected>' in page.text


async def test_an_endpoint_of_every_event_says_so(owner: ConsoleUser, receiver: Receiver) -> None:
    endpoint_id = await _receiving(owner, receiver)
    assert "All events" in (await owner.get("/webhooks")).text
    assert "All events" in (await owner.get(f"/webhooks/{endpoint_id}")).text


async def test_a_bad_url_or_event_type_is_refused_inline(owner: ConsoleUser) -> None:
    page = await owner.post("/webhooks", {"url": "not a url"})
    assert page.status_code == 422
    assert 'id="e-url"' in page.text
    assert 'aria-invalid="true"' in page.text
    page = await owner.post(
        "/webhooks", {"url": "https://hooks.example.com/x", "event_types": ["deal.lost"]}
    )
    assert page.status_code == 422
    assert "An event type is not in the catalogue" in page.text
    assert 'id="e-event_types"' in page.text
    assert "deal.lost" in page.text
    # What was typed stays in the form.
    assert 'value="https://hooks.example.com/x"' in page.text
    assert "No endpoints yet" in (await owner.get("/webhooks")).text


async def test_a_url_the_ssrf_policy_forbids_is_refused_inline(
    app: FastAPI, owner: ConsoleUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in production: public addresses only.
    monkeypatch.setattr(app.state, "ssrf_policy", Policy(allow_all=False))
    page = await owner.post("/webhooks", {"url": "https://169.254.169.254/latest/meta-data/"})
    assert page.status_code == 422
    assert "The webhook URL cannot be used" in page.text
    error = re.search(r'<p class="error" id="e-url">([^<]+)</p>', page.text)
    assert error
    assert "not a public address" in error.group(1)
    assert not error.group(1).startswith("url:")
    assert "No endpoints yet" in (await owner.get("/webhooks")).text


async def test_edit_changes_the_events_and_refuses_mistakes_inline(
    app: FastAPI, owner: ConsoleUser, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint_id = await _receiving(owner, receiver, event_types=["key.created"])
    form = await owner.get(f"/webhooks/{endpoint_id}/edit")
    assert 'value="key.created" checked' in form.text
    saved = await owner.post(
        f"/webhooks/{endpoint_id}",
        {"url": receiver.url, "description": "Billing", "event_types": ["key.revoked"]},
    )
    assert saved.status_code == 303
    page = await owner.get(saved.headers["location"].removeprefix(CONSOLE))
    assert "Changes saved" in page.text
    assert "key.revoked" in page.text
    assert "Billing" in page.text

    monkeypatch.setattr(app.state, "ssrf_policy", Policy(allow_all=False))
    refused = await owner.post(f"/webhooks/{endpoint_id}", {"url": "https://10.0.0.7/hook"})
    assert refused.status_code == 422
    assert 'id="e-url"' in refused.text
    monkeypatch.undo()
    assert receiver.url in (await owner.get(f"/webhooks/{endpoint_id}")).text


async def test_a_test_event_shows_the_attempt_and_what_was_sent(
    owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    # As htmx sends it: the result alone, to swap in place.
    result = await owner.client.post(
        f"{CONSOLE}/webhooks/{endpoint_id}/test",
        data={"csrf_token": owner.csrf, "event_type": "key.created"},
        headers={"HX-Request": "true"},
    )
    assert result.status_code == 200
    assert result.text.lstrip().startswith('<div id="test-result"')
    assert "<html" not in result.text
    assert "Delivered" in result.text
    assert "HTTP 200" in result.text
    assert re.search(r"<dt>Latency</dt><dd>\d+ ms</dd>", result.text)
    [received] = receiver.received
    # The receiver verified the signature with the secret the page showed once.
    assert received.verified_by
    # Exactly what was sent: every header, and the body as signed.
    sent = re.search(r'<pre class="sent"[^>]*>(.*?)</pre>', result.text, re.S)
    assert sent
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type"):
        assert f"{name}: {received.headers[name]}" in sent.group(1), name
    assert received.body.decode().replace('"', "&#34;") in sent.group(1)
    # Not recorded in the delivery log.
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries")
    assert "No deliveries yet" in log.text

    # Without htmx, a page of its own.
    receiver.default = Answer(status=500, body=b"boom")
    failed = await owner.post(f"/webhooks/{endpoint_id}/test", {"event_type": "contact.created"})
    assert failed.status_code == 200
    assert "<h1>Test event</h1>" in failed.text
    assert "Refused by the endpoint" in failed.text
    assert "HTTP 500" in failed.text
    assert "boom" in failed.text
    assert "&#34;type&#34;:&#34;contact.created&#34;" in failed.text


async def test_a_test_event_to_nothing_says_why_no_answer_came(owner: ConsoleUser) -> None:
    endpoint_id, _ = await _endpoint(owner, f"http://127.0.0.1:{free_port()}/hooks")
    result = await owner.post(f"/webhooks/{endpoint_id}/test", {"event_type": "key.revoked"})
    assert "Not delivered" in result.text
    assert "<dt>Error</dt><dd><code>refused</code>" in result.text


async def test_a_test_event_of_an_unknown_type_is_refused_inline(owner: ConsoleUser) -> None:
    endpoint_id, _ = await _endpoint(owner, f"http://127.0.0.1:{free_port()}/hooks")
    result = await owner.client.post(
        f"{CONSOLE}/webhooks/{endpoint_id}/test",
        data={"csrf_token": owner.csrf, "event_type": "deal.lost"},
        headers={"HX-Request": "true"},
    )
    assert result.status_code == 422
    assert result.text.lstrip().startswith('<div id="test-result"')
    assert "An event type is not in the catalogue" in result.text


async def test_the_delivery_log_shows_each_attempt_of_real_deliveries(
    client: httpx.AsyncClient,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    receiver: Receiver,
    delivery: Delivery,
    clock: Clock,
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    receiver.answers.extend([Answer(503, body=b"try later"), Answer(200, body=b"thanks")])
    await create_application(client, tenant_for_console)
    await delivery.run_once()

    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries")
    assert "application.created" in log.text
    assert '<span class="status pending">pending</span>' in log.text
    assert "HTTP 503" in log.text
    assert "try later" in log.text
    assert "Next attempt" in log.text
    # The list's health hint: every attempt has failed so far.
    listing = await owner.get("/webhooks")
    assert '<span class="status failing">failing</span>' in listing.text
    assert "Every attempt has failed since" in listing.text

    clock.advance(6)
    await delivery.run_once()
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries")
    assert '<span class="status delivered">delivered</span>' in log.text
    assert "HTTP 503" in log.text
    assert "HTTP 200" in log.text
    assert "thanks" in log.text
    assert receiver.received[0].id in log.text  # the webhook-id, the same for both attempts
    assert receiver.received[0].id == receiver.received[1].id
    assert "No failing deliveries" in (await owner.get("/webhooks")).text


async def test_the_delivery_log_filters_and_pages(
    client: httpx.AsyncClient,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    receiver: Receiver,
    delivery: Delivery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    application = await create_application(client, tenant_for_console)
    await client.delete(f"/v1/applications/{application['id']}", headers=tenant_for_console.headers)
    await delivery.run_once()
    path = f"/webhooks/{endpoint_id}/deliveries"

    # The form as sent without script, "any status" chosen.
    every = await owner.get(f"{path}?status=&event_type=")
    assert every.status_code == 200
    assert len(MESSAGE_RE.findall(every.text)) == 2
    only = await owner.get(f"{path}?status=&event_type=application.deleted")
    assert len(MESSAGE_RE.findall(only.text)) == 1
    assert '<option value="application.deleted" selected>' in only.text
    assert "No message matches these filters" in (await owner.get(f"{path}?status=failed")).text
    # htmx asks for the same page; it swaps the log alone.
    swapped = await owner.get(f"{path}?status=delivered", headers={"HX-Request": "true"})
    assert len(MESSAGE_RE.findall(swapped.text)) == 2

    monkeypatch.setattr(webhooks_pages, "DEFAULT_PAGE_SIZE", 1)
    first = await owner.get(path)
    [newest] = MESSAGE_RE.findall(first.text)
    older = re.search(r'href="/console(/webhooks/[^"]+cursor=[^"]+)">Older messages', first.text)
    assert older
    second = await owner.get(older.group(1).replace("&amp;", "&"))
    [oldest] = MESSAGE_RE.findall(second.text)
    assert oldest != newest
    assert "Older messages" not in second.text
    assert "Newest messages" in second.text


async def test_redeliver_sends_a_message_again_under_its_webhook_id(
    client: httpx.AsyncClient,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    receiver: Receiver,
    delivery: Delivery,
) -> None:
    endpoint_id = await _receiving(owner, receiver, event_types=["application.created"])
    await create_application(client, tenant_for_console)
    await delivery.run_once()
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries?status=delivered")
    [message_id] = MESSAGE_RE.findall(log.text)
    again = await owner.post(
        f"/webhooks/{endpoint_id}/deliveries/{message_id}/redeliver", {"status": "delivered"}
    )
    assert again.status_code == 303
    # Back to the log as it was filtered.
    location = again.headers["location"]
    assert location.endswith("?saved=redelivered&status=delivered")
    page = await owner.get(location.removeprefix(CONSOLE))
    assert "being delivered again" in page.text
    assert await delivery.run_once() == 1
    assert [r.id for r in receiver.received] == [message_id, message_id]
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries")
    assert log.text.count("HTTP 200") == 2


async def test_replay_delivers_again_the_failures_since_a_time_of_the_browsers_clock(
    client: httpx.AsyncClient,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    receiver: Receiver,
    delivery: Delivery,
    clock: Clock,
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    receiver.default = Answer(500)
    before = utcnow() - timedelta(minutes=1)
    await create_application(client, tenant_for_console)
    for _ in range(6):  # every attempt of the schedule fails
        await delivery.run_once()
        clock.advance(24 * 3600)
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries?status=failed")
    assert len(MESSAGE_RE.findall(log.text)) == 1
    assert "Every attempt failed" in log.text
    assert log.text.count("HTTP 500") == 6

    # A browser two hours east of UTC: its wall clock reads two hours more.
    east = (before + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    later = (before + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    nothing = await owner.post(
        f"/webhooks/{endpoint_id}/replay", {"since": later, "tz_offset": "-120"}
    )
    assert nothing.headers["location"].endswith("saved=replayed-0")
    page = await owner.get(nothing.headers["location"].removeprefix(CONSOLE))
    assert "nothing to replay" in page.text

    receiver.default = Answer(200)
    replayed = await owner.post(
        f"/webhooks/{endpoint_id}/replay", {"since": east, "tz_offset": "-120"}
    )
    assert replayed.headers["location"].endswith("saved=replayed-1")
    page = await owner.get(replayed.headers["location"].removeprefix(CONSOLE))
    assert "1 failed message is being delivered again" in page.text
    assert await delivery.run_once() == 1
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries?status=delivered")
    assert len(MESSAGE_RE.findall(log.text)) == 1


async def test_replay_without_a_time_is_refused_inline(
    owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    for since in ("", "yesterday", "2026-11-20T10:00+02:00"):
        page = await owner.post(f"/webhooks/{endpoint_id}/replay", {"since": since})
        assert page.status_code == 422, since
        assert 'id="e-since"' in page.text
        assert '<details class="card replay" open>' in page.text


def test_lengths_of_time_read_as_words() -> None:
    assert webhooks_pages.duration(5 * 24 * 3600) == "5 days"
    assert webhooks_pages.duration(24 * 3600) == "24 hours"
    assert webhooks_pages.duration(3600) == "60 minutes"
    assert webhooks_pages.duration(90) == "90 seconds"
    assert webhooks_pages.duration(1) == "1 second"


def test_a_picked_time_becomes_utc_with_the_browsers_offset() -> None:
    assert webhooks_pages.since_of("2026-03-29T12:30", "-120") == datetime(
        2026, 3, 29, 10, 30, tzinfo=UTC
    )
    assert webhooks_pages.since_of("2026-03-29T12:30", "300") == datetime(
        2026, 3, 29, 17, 30, tzinfo=UTC
    )
    # Without the browser's offset (no script), the page said UTC.
    assert webhooks_pages.since_of("2026-03-29T12:30", "") == datetime(
        2026, 3, 29, 12, 30, tzinfo=UTC
    )
    for local, offset in (("2026-03-29T12:30", "9999"), ("noon", "0"), ("2026-03-29", "x")):
        with pytest.raises(ValueError):  # noqa: PT011 - any refusal is a form error
            webhooks_pages.since_of(local, offset)


async def test_disable_enable_rotate_and_delete(owner: ConsoleUser, receiver: Receiver) -> None:
    endpoint_id = await _receiving(owner, receiver)
    assert (await owner.post(f"/webhooks/{endpoint_id}/disable")).status_code == 303
    page = await owner.get(f"/webhooks/{endpoint_id}")
    assert '<span class="status disabled">disabled</span>' in page.text
    assert "Disabled by an admin" in page.text
    assert "Disabled by an admin" in (await owner.get("/webhooks")).text
    assert (await owner.post(f"/webhooks/{endpoint_id}/enable")).status_code == 303
    assert "No failing deliveries" in (await owner.get(f"/webhooks/{endpoint_id}")).text

    confirm = await owner.get(f"/webhooks/{endpoint_id}/rotate-secret")
    assert "keeps signing beside the new one for 24 hours" in confirm.text
    rotated = await owner.post(f"/webhooks/{endpoint_id}/rotate-secret")
    [secret] = SECRET_RE.findall(rotated.text)
    secrets_seen.remember(secret)
    assert secret not in receiver.secrets
    assert "it will not be shown again" in rotated.text
    assert "The previous secret keeps signing beside this one until" in rotated.text
    page = await owner.get(f"/webhooks/{endpoint_id}")
    assert secret not in page.text
    assert "the previous one also signs until" in page.text
    # Both secrets sign a test event meanwhile.
    receiver.secrets.append(secret)
    await owner.post(f"/webhooks/{endpoint_id}/test", {"event_type": "key.created"})
    assert len(receiver.received[-1].verified_by) == 2

    assert "cannot be undone" in (await owner.get(f"/webhooks/{endpoint_id}/delete")).text
    deleted = await owner.post(f"/webhooks/{endpoint_id}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == f"{CONSOLE}/webhooks"
    assert (await owner.get(f"/webhooks/{endpoint_id}")).status_code == 404


async def test_an_endpoint_keyservice_disabled_says_why(
    session: AsyncSession, owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    endpoint = await session.get(WebhookEndpoint, uuid.UUID(endpoint_id))
    assert endpoint is not None
    endpoint.enabled = False
    endpoint.disabled_reason = "gone"
    endpoint.disabled_at = utcnow()
    await session.flush()
    assert "It answered 410 Gone" in (await owner.get("/webhooks")).text
    endpoint.disabled_reason = "failing"
    endpoint.failing_since = utcnow() - timedelta(days=5)
    await session.flush()
    page = await owner.get(f"/webhooks/{endpoint_id}")
    assert "Every delivery failed since" in page.text
    assert "keyservice disabled it" in page.text


async def test_a_member_reads_webhooks_but_cannot_change_them(
    client: httpx.AsyncClient,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    member: ConsoleUser,
    receiver: Receiver,
    delivery: Delivery,
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    await create_application(client, tenant_for_console)
    await delivery.run_once()
    page = await member.get(f"/webhooks/{endpoint_id}")
    assert page.status_code == 200
    assert "<form" not in page.text.split("<main", 1)[1]
    for control in ("/edit", "/disable", "/rotate-secret", "/delete", "/test"):
        assert f"{endpoint_id}{control}" not in page.text
    assert "Add an endpoint" not in (await member.get("/webhooks")).text
    log = await member.get(f"/webhooks/{endpoint_id}/deliveries")
    assert log.status_code == 200
    assert "application.created" in log.text
    assert "Redeliver" not in log.text
    assert "Replay" not in log.text
    [message_id] = MESSAGE_RE.findall((await owner.get(f"/webhooks/{endpoint_id}/deliveries")).text)

    for path in ("/new", f"/{endpoint_id}/edit", f"/{endpoint_id}/delete"):
        assert (await member.get(f"/webhooks{path}")).status_code == 403, path
    forged = {"url": receiver.url, "event_type": "key.created", "since": "2026-01-01T00:00"}
    for path in (
        "",
        f"/{endpoint_id}",
        f"/{endpoint_id}/disable",
        f"/{endpoint_id}/rotate-secret",
        f"/{endpoint_id}/delete",
        f"/{endpoint_id}/test",
        f"/{endpoint_id}/deliveries/{message_id}/redeliver",
        f"/{endpoint_id}/replay",
    ):
        response = await member.post(f"/webhooks{path}", forged)
        assert response.status_code == 403, path
    assert len(receiver.received) == 1
    assert receiver.url in (await owner.get(f"/webhooks/{endpoint_id}")).text


async def test_a_form_without_the_csrf_token_changes_nothing(
    owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    for path, data in (
        ("", {"url": "https://forged.example/hook"}),
        (f"/{endpoint_id}/delete", {}),
        (f"/{endpoint_id}/disable", {}),
        (f"/{endpoint_id}/rotate-secret", {}),
        (f"/{endpoint_id}/test", {"event_type": "key.created"}),
    ):
        response = await owner.client.post(f"{CONSOLE}/webhooks{path}", data=data)
        assert response.status_code == 403, path
        assert "The form has expired" in response.text
        assert "whsec_" not in response.text
    listing = await owner.get("/webhooks")
    assert "forged.example" not in listing.text
    assert "No failing deliveries" in listing.text  # still enabled
    assert not receiver.received


async def test_another_accounts_endpoint_is_not_found(
    client: httpx.AsyncClient,
    session: AsyncSession,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    sign_in: SignIn,
    receiver: Receiver,
    delivery: Delivery,
) -> None:
    endpoint_id = await _receiving(owner, receiver)
    await create_application(client, tenant_for_console)
    await delivery.run_once()
    [message_id] = MESSAGE_RE.findall((await owner.get(f"/webhooks/{endpoint_id}/deliveries")).text)
    initech = await create_tenant(session, name="Initech")
    stranger = await sign_in(initech.owner)
    for path in ("", "/edit", "/deliveries", "/rotate-secret", "/delete"):
        assert (await stranger.get(f"/webhooks/{endpoint_id}{path}")).status_code == 404, path
    for path in (
        "",
        "/test",
        "/disable",
        "/rotate-secret",
        "/delete",
        "/replay",
        f"/deliveries/{message_id}/redeliver",
    ):
        response = await stranger.post(
            f"/webhooks/{endpoint_id}{path}",
            {"event_type": "key.created", "url": receiver.url, "since": "2026-01-01T00:00"},
        )
        assert response.status_code == 404, path
    # Nor is a message reached through an endpoint of one's own.
    own = await endpoint_for(client, initech, receiver)
    response = await stranger.post(f"/webhooks/{own['id']}/deliveries/{message_id}/redeliver")
    assert response.status_code == 404
    assert len(receiver.received) == 1
    assert receiver.url in (await owner.get(f"/webhooks/{endpoint_id}")).text

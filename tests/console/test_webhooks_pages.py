"""The webhooks pages: endpoints, the secret once, a test event checked by a real receiver, the
delivery log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from consoles import ConsoleUser, SignIn
from factories import Tenant, create_application, create_tenant
from receivers import Answer, Receiver

SECRET_RE = re.compile(r'id="secret" type="text" readonly value="(whsec_[A-Za-z0-9+/=]+)"')


async def _endpoint(owner: ConsoleUser, receiver: Receiver, **fields: object) -> str:
    page = await owner.post("/webhooks", {"url": receiver.url, **fields})
    assert page.status_code == 200, page.text
    [secret] = SECRET_RE.findall(page.text)
    receiver.secrets.append(secret)
    assert "it will not be shown again" in page.text
    match = re.search(r'href="/console/webhooks/([0-9a-f-]{36})"', page.text)
    assert match
    return match.group(1)


async def test_add_an_endpoint_and_its_secret_is_shown_once(
    owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(owner, receiver, event_types=["key.created", "key.revoked"])
    listing = await owner.get("/webhooks")
    assert receiver.url in listing.text
    assert "whsec_" not in listing.text
    page = await owner.get(f"/webhooks/{endpoint_id}")
    assert "key.revoked" in page.text
    assert "whsec_" not in page.text


async def test_a_bad_url_or_event_type_is_refused_inline(owner: ConsoleUser) -> None:
    page = await owner.post("/webhooks", {"url": "not a url"})
    assert page.status_code == 422
    assert 'id="e-url"' in page.text
    page = await owner.post(
        "/webhooks", {"url": "https://hooks.example.com/x", "event_types": ["deal.lost"]}
    )
    assert page.status_code == 422
    assert "deal.lost" in page.text
    assert "No endpoints yet" in (await owner.get("/webhooks")).text


async def test_a_test_event_shows_the_attempt_and_what_was_sent(
    owner: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(owner, receiver)
    # As htmx sends it: the result alone, to swap in place.
    result = await owner.client.post(
        f"/console/webhooks/{endpoint_id}/test",
        data={"csrf_token": owner.csrf, "event_type": "key.created"},
        headers={"HX-Request": "true"},
    )
    assert result.status_code == 200
    assert result.text.lstrip().startswith('<div id="test-result"')
    assert "Delivered" in result.text
    assert "HTTP 204" in result.text or "HTTP 200" in result.text
    assert "webhook-signature: v1," in result.text
    [received] = receiver.received
    # The receiver verified the signature with the secret the page showed once.
    assert received.verified_by
    assert received.headers["webhook-id"] in result.text

    receiver.default = Answer(status=500, body=b"boom")
    failed = await owner.post(f"/webhooks/{endpoint_id}/test", {"event_type": "contact.created"})
    assert "Not delivered" in failed.text
    assert "HTTP 500" in failed.text
    assert "boom" in failed.text


async def test_the_delivery_log_shows_each_message_and_redelivers(
    client: httpx.AsyncClient,
    tenant_for_console: Tenant,
    owner: ConsoleUser,
    receiver: Receiver,
) -> None:
    endpoint_id = await _endpoint(owner, receiver, event_types=["application.created"])
    await create_application(client, tenant_for_console)
    log = await owner.get(f"/webhooks/{endpoint_id}/deliveries")
    assert "application.created" in log.text
    assert "pending" in log.text
    message_id = re.search(r"/deliveries/([0-9a-f-]{36})/redeliver", log.text)
    assert message_id
    again = await owner.post(f"/webhooks/{endpoint_id}/deliveries/{message_id.group(1)}/redeliver")
    assert again.status_code == 303
    unfiltered = await owner.get(f"/webhooks/{endpoint_id}/deliveries?status=&event_type=")
    assert "application.created" in unfiltered.text
    filtered = await owner.get(f"/webhooks/{endpoint_id}/deliveries?status=failed")
    assert "No message matches these filters" in filtered.text
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    replayed = await owner.post(f"/webhooks/{endpoint_id}/replay", {"since": since})
    assert replayed.status_code == 303
    assert "replayed-0" in replayed.headers["location"]


async def test_disable_enable_rotate_and_delete(owner: ConsoleUser, receiver: Receiver) -> None:
    endpoint_id = await _endpoint(owner, receiver)
    assert (await owner.post(f"/webhooks/{endpoint_id}/disable")).status_code == 303
    assert "status disabled" in (await owner.get(f"/webhooks/{endpoint_id}")).text
    assert (await owner.post(f"/webhooks/{endpoint_id}/enable")).status_code == 303
    confirm = await owner.get(f"/webhooks/{endpoint_id}/rotate-secret")
    assert "keeps signing beside it" in confirm.text
    rotated = await owner.post(f"/webhooks/{endpoint_id}/rotate-secret")
    [secret] = SECRET_RE.findall(rotated.text)
    assert secret not in receiver.secrets
    assert "cannot be undone" in (await owner.get(f"/webhooks/{endpoint_id}/delete")).text
    assert (await owner.post(f"/webhooks/{endpoint_id}/delete")).status_code == 303
    assert (await owner.get(f"/webhooks/{endpoint_id}")).status_code == 404


async def test_a_member_reads_webhooks_but_cannot_change_them(
    owner: ConsoleUser, member: ConsoleUser, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(owner, receiver)
    page = await member.get(f"/webhooks/{endpoint_id}")
    assert page.status_code == 200
    for control in ("/edit", "/disable", "/rotate-secret", "/delete", "/test"):
        assert f"{endpoint_id}{control}" not in page.text
    assert "Add an endpoint" not in (await member.get("/webhooks")).text
    for path in ("", "/disable", "/rotate-secret", "/delete", "/test"):
        response = await member.post(f"/webhooks/{endpoint_id}{path}", {"url": receiver.url})
        assert response.status_code == 403, path
    assert not receiver.received


async def test_another_accounts_endpoint_is_not_found(
    session: AsyncSession, owner: ConsoleUser, sign_in: SignIn, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(owner, receiver)
    stranger = await sign_in((await create_tenant(session, name="Initech")).owner)
    for path in ("", "/edit", "/deliveries", "/rotate-secret", "/delete"):
        assert (await stranger.get(f"/webhooks/{endpoint_id}{path}")).status_code == 404, path
    for path in ("/test", "/disable", "/delete"):
        response = await stranger.post(
            f"/webhooks/{endpoint_id}{path}", {"event_type": "key.created"}
        )
        assert response.status_code == 404, path
    assert not receiver.received

"""The API keys pages: the same rules as the API, the secret shown once."""

from __future__ import annotations

import html
import re
import uuid

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from consoles import ConsoleUser, SignIn
from factories import Tenant, create_tenant
from keyservice.keys import service as keys_service
from keyservice.models import KeyKind
from keyservice.pagination import DEFAULT_PAGE_SIZE
from keyservice.security import Environment

SECRET_RE = re.compile(r'id="secret" type="text" readonly value="(ks_(?:live|test)_[0-9A-Za-z]+)"')


async def _application(owner: ConsoleUser, *permissions: str) -> str:
    response = await owner.post(
        "/applications",
        {
            "name": "Zapier sync",
            "developer_email": "dev@partner.example",
            "permissions": list(permissions) or ["contacts:read", "deals:read"],
        },
    )
    assert response.status_code == 303, response.text
    return response.headers["location"].split("/")[-1].split("?")[0]


async def _generate(owner: ConsoleUser, application_id: str, **fields: object) -> httpx.Response:
    data: dict[str, object] = {
        "application_id": application_id,
        "name": "Production Integration",
        "scopes": ["contacts:read"],
        "environment": "live",
        "expires_in": "90d",
    }
    data.update(fields)
    return await owner.post("/keys", data)


async def test_a_generated_key_is_shown_once_and_works(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    page = await _generate(owner, application_id)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "it will not be shown again" in page.text
    [secret] = SECRET_RE.findall(page.text)
    # Afterwards only its hint: on the list, on its page.
    listing = await owner.get("/keys")
    assert "Production Integration" in listing.text
    assert secret not in listing.text
    assert secret[-4:] in listing.text
    key_id = re.search(r'href="/console/keys/([0-9a-f-]{36})"', listing.text)
    assert key_id
    details = await owner.get(f"/keys/{key_id.group(1)}")
    assert secret not in details.text
    assert "90d" not in details.text  # an expiry date, not the preset


async def test_scopes_outside_the_applications_permissions_are_refused_inline(
    owner: ConsoleUser,
) -> None:
    application_id = await _application(owner, "contacts:read")
    page = await _generate(owner, application_id, scopes=["deals:write"])
    assert page.status_code == 422
    assert "within the application&#39;s permissions" in page.text
    assert not SECRET_RE.search(page.text)
    assert "Production Integration" not in (await owner.get("/keys")).text


async def test_a_key_with_limits_and_an_expiry_day(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    page = await _generate(
        owner,
        application_id,
        expires_in="date",
        expires_on="2099-03-01",
        tz_offset="-120",  # a browser two hours east of UTC
        rate_limit="100",
        rate_period="60",
        monthly_quota="5000",
    )
    assert page.status_code == 200, page.text
    assert 'datetime="2099-03-01T22:00:00+00:00"' in page.text
    key_id = re.search(r'href="/console/keys/([0-9a-f-]{36})"', page.text)
    assert key_id
    details = await owner.get(f"/keys/{key_id.group(1)}")
    assert '100 requests per minute, bursts of 100 <span class="muted">(this key&#39;s own)' in (
        details.text
    )
    assert '5,000 requests <span class="muted">(this key&#39;s own)' in details.text


async def test_rotate_and_revoke_after_their_confirmation(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    first = SECRET_RE.findall((await _generate(owner, application_id)).text)[0]
    listing = await owner.get("/keys")
    key_id = re.findall(r'href="/console/keys/([0-9a-f-]{36})"', listing.text)[0]

    confirm = await owner.get(f"/keys/{key_id}/rotate")
    # What breaks, either way.
    assert "must be given the new one" in confirm.text
    assert "It is refused at once, everywhere" in confirm.text
    assert "Both secrets work until it ends" in confirm.text
    assert "This key has never been used" in confirm.text
    rotated = await owner.post(f"/keys/{key_id}/rotate", {"grace_period_seconds": "3600"})
    [second] = SECRET_RE.findall(rotated.text)
    assert second != first
    assert "The previous secret keeps working until" in rotated.text
    assert "Previous secret works until" in (await owner.get(f"/keys/{key_id}")).text

    confirm = await owner.get(f"/keys/{key_id}/revoke")
    assert "stops working at once, everywhere" in confirm.text
    revoked = await owner.post(f"/keys/{key_id}/revoke")
    assert revoked.status_code == 303
    page = await owner.get(revoked.headers["location"].removeprefix("/console"))
    assert "it is refused everywhere from now on" in page.text
    assert "/rotate" not in page.text
    # Revoked, the secret its rotation kept dies with it.
    assert "Previous secret works until" not in page.text


async def test_filters_narrow_the_list(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    await _generate(owner, application_id, name="Live one")
    await _generate(owner, application_id, name="Test one", environment="test")
    live = await owner.get("/keys?environment=live")
    assert "Live one" in live.text
    assert "Test one" not in live.text
    revoked = await owner.get("/keys?status=revoked")
    assert "No key matches these filters" in revoked.text
    # A filter that is not one is a page not found, never a 500.
    assert (await owner.get("/keys?environment=staging")).status_code == 404


async def test_a_member_sees_keys_without_write_controls_and_cannot_write(
    owner: ConsoleUser, member: ConsoleUser
) -> None:
    application_id = await _application(owner)
    await _generate(owner, application_id)
    listing = await owner.get("/keys")
    key_id = re.findall(r'href="/console/keys/([0-9a-f-]{36})"', listing.text)[0]
    page = await member.get("/keys")
    assert "Production Integration" in page.text
    assert "Generate a key" not in page.text
    details = await member.get(f"/keys/{key_id}")
    assert "/rotate" not in details.text
    assert "/revoke" not in details.text
    # Forged writes, with a valid CSRF token, are refused all the same.
    for path, data in (
        ("/keys", {"application_id": application_id, "name": "x", "scopes": ["contacts:read"]}),
        (f"/keys/{key_id}/rotate", {}),
        (f"/keys/{key_id}/revoke", {}),
    ):
        response = await member.post(path, data)
        assert response.status_code == 403, path
    assert "active" in (await owner.get(f"/keys/{key_id}")).text


async def test_another_accounts_keys_are_not_found(
    session: AsyncSession, owner: ConsoleUser, sign_in: SignIn
) -> None:
    application_id = await _application(owner)
    await _generate(owner, application_id)
    key_id = re.findall(r'href="/console/keys/([0-9a-f-]{36})"', (await owner.get("/keys")).text)[0]
    stranger_tenant = await create_tenant(session, name="Initech")
    stranger = await sign_in(stranger_tenant.owner)
    for path in (
        f"/keys/{key_id}",
        f"/keys/{key_id}/rotate",
        f"/keys/{key_id}/revoke",
        f"/keys/new?application_id={application_id}",
    ):
        assert (await stranger.get(path)).status_code == 404, path
    assert (await stranger.post(f"/keys/{key_id}/revoke")).status_code == 404
    assert "Production Integration" not in (await stranger.get("/keys")).text
    assert "active" in (await owner.get(f"/keys/{key_id}")).text


async def test_a_filter_left_at_any_is_no_filter(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    await _generate(owner, application_id)
    # As the filter form submits it when only the environment is chosen.
    page = await owner.get("/keys?application_id=&environment=live&status=")
    assert page.status_code == 200
    assert "Production Integration" in page.text


async def test_the_filter_form_as_a_browser_submits_it(owner: ConsoleUser) -> None:
    """A filter left at "All" comes as an empty value: it filters nothing, and is no error."""
    application_id = await _application(owner)
    await _generate(owner, application_id, name="Live one")
    await _generate(owner, application_id, name="Test one", environment="test")
    page = await owner.get("/keys?application_id=&environment=test&status=")
    assert page.status_code == 200
    assert "Test one" in page.text
    assert "Live one" not in page.text
    page = await owner.get(f"/keys?application_id={application_id}&environment=&status=active")
    assert "Test one" in page.text
    assert "Live one" in page.text
    assert (await owner.get("/keys?application_id=&environment=&status=")).status_code == 200


async def test_the_list_pages_by_cursor_and_keeps_its_filters(
    session: AsyncSession, owner: ConsoleUser, tenant_for_console: Tenant
) -> None:
    application_id = await _application(owner)
    keys = [
        keys_service.new_key(
            prefix="ks",
            kind=KeyKind.application,
            name=f"Key {number:02}",
            environment=Environment.test,
            scopes=[],
            expires_at=None,
            account_id=tenant_for_console.account.id,
            application_id=uuid.UUID(application_id),
        )[0]
        for number in range(DEFAULT_PAGE_SIZE + 1)
    ]
    session.add_all(keys)
    await session.commit()
    first = await owner.get("/keys?environment=test")
    assert first.text.count('<td><code class="hint">') == DEFAULT_PAGE_SIZE
    older = re.search(r'href="/console/keys\?([^"]+)">Older keys', first.text)
    assert older
    query = html.unescape(older.group(1))
    assert query.startswith("environment=test&cursor=")
    second = await owner.get("/keys?" + query)
    assert second.text.count('<td><code class="hint">') == 1
    assert "Older keys" not in second.text
    assert 'href="/console/keys?environment=test">Newest keys' in second.text
    seen = re.findall(r">(Key \d\d)</a>", first.text + second.text)
    assert sorted(seen) == [f"Key {number:02}" for number in range(DEFAULT_PAGE_SIZE + 1)]


async def test_a_form_without_its_csrf_token_is_refused(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    await _generate(owner, application_id)
    key_id = re.findall(r'href="/console/keys/([0-9a-f-]{36})"', (await owner.get("/keys")).text)[0]
    for path, data in (
        ("/keys", {"application_id": application_id, "name": "Forged", "scopes": "contacts:read"}),
        (f"/keys/{key_id}/rotate", {"grace_period_seconds": "0"}),
        (f"/keys/{key_id}/revoke", {}),
    ):
        for token in (None, "not-the-token"):
            form = data if token is None else {**data, "csrf_token": token}
            response = await owner.client.post("/console" + path, data=form)
            assert response.status_code == 403, path
            assert "The form has expired" in response.text
    listing = await owner.get("/keys")
    assert "Forged" not in listing.text
    assert "active" in listing.text


async def test_each_mistake_is_shown_next_to_its_field(owner: ConsoleUser) -> None:
    application_id = await _application(owner, "contacts:read")
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"name": ""}, "e-name", "This field is required."),
        ({"name": "x" * 201}, "e-name", "At most 200"),
        ({"scopes": ["deals:write"]}, "e-scopes", "within the application&#39;s permissions"),
        ({"expires_in": "date", "expires_on": ""}, "e-expires_on", "Choose a day."),
        ({"expires_in": "date", "expires_on": "2001-01-01"}, "e-expires_on", "in the future"),
        ({"rate_limit": "0"}, "e-rate_limit", "greater than or equal to 1"),
        ({"rate_limit": "10", "rate_period": "60", "rate_burst": "-1"}, "e-rate_burst", "1"),
        ({"rate_limit": "10", "rate_period": "0"}, "e-rate_period", "greater than or equal"),
        ({"monthly_quota": "many"}, "e-monthly_quota", "valid integer"),
    ]
    for fields, error_id, message in cases:
        page = await _generate(owner, application_id, **fields)
        assert page.status_code == 422, fields
        assert not SECRET_RE.search(page.text)
        error = re.search(rf'<p class="error" id="{error_id}">([^<]*)</p>', page.text)
        assert error, (fields, page.text[page.text.find("problem") :][:2000])
        assert message in error.group(1), (fields, error.group(1))
        # What was typed stays in the form.
        if fields.get("name"):
            assert f'value="{fields["name"]}"' in page.text
    assert "Production Integration" not in (await owner.get("/keys")).text


async def test_the_new_key_form_offers_the_chosen_applications_permissions(
    owner: ConsoleUser,
) -> None:
    crm = await _application(owner, "contacts:read", "deals:read")
    reports = await _application(owner, "reports:read")
    page = await owner.get(f"/keys/new?application_id={reports}")
    assert re.search(rf'<option value="{reports}" selected>', page.text)
    assert 'name="scopes" value="reports:read"' in page.text
    assert 'name="scopes" value="contacts:read"' not in page.text
    page = await owner.get(f"/keys/new?application_id={crm}")
    assert 'name="scopes" value="contacts:read"' in page.text
    assert 'name="scopes" value="reports:read"' not in page.text


async def test_a_keys_page_says_which_limits_apply_and_whose_they_are(
    owner: ConsoleUser, tenant_for_console: Tenant
) -> None:
    application_id = await _application(owner)
    page = await _generate(owner, application_id)
    key_id = re.search(r'href="/console/keys/([0-9a-f-]{36})"', page.text)
    assert key_id
    details = await owner.get(f"/keys/{key_id.group(1)}")
    assert '<dt>Rate limit</dt><dd><span class="muted">none</span>' in details.text
    assert '<dt>Monthly quota</dt><dd><span class="muted">none</span>' in details.text
    assert f'href="/console/usage?key_id={key_id.group(1)}"' in details.text
    # The application's limits, set through the API, apply to its keys without their own.
    response = await owner.client.patch(
        f"/v1/applications/{application_id}",
        json={"rate_limit": {"limit": 5, "period_seconds": 1}, "monthly_quota": 1_000_000},
        headers=tenant_for_console.headers,
    )
    assert response.status_code == 200, response.text
    details = await owner.get(f"/keys/{key_id.group(1)}")
    assert (
        '5 requests per second, bursts of 5 <span class="muted">(the application&#39;s)'
        in details.text
    )
    assert '1,000,000 requests <span class="muted">(the application&#39;s)' in details.text

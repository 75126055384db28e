"""The API keys pages: the same rules as the API, the secret shown once."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from consoles import ConsoleUser, SignIn
from factories import create_tenant

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


async def test_bad_fields_are_shown_next_to_them(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    page = await _generate(
        owner, application_id, name="", rate_limit="0", expires_in="date", expires_on=""
    )
    assert page.status_code == 422
    assert (
        'id="e-name"' in page.text
        or 'id="e-expires_on"' in page.text
        or "Choose a day" in page.text
    )


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
    assert "100 requests per 60 s" in details.text
    assert "5000" in details.text


async def test_rotate_and_revoke_after_their_confirmation(owner: ConsoleUser) -> None:
    application_id = await _application(owner)
    first = SECRET_RE.findall((await _generate(owner, application_id)).text)[0]
    listing = await owner.get("/keys")
    key_id = re.findall(r'href="/console/keys/([0-9a-f-]{36})"', listing.text)[0]

    confirm = await owner.get(f"/keys/{key_id}/rotate")
    assert "must switch to the new one" in confirm.text
    rotated = await owner.post(f"/keys/{key_id}/rotate", {"grace_period_seconds": "3600"})
    [second] = SECRET_RE.findall(rotated.text)
    assert second != first
    assert "The previous secret keeps working until" in rotated.text

    confirm = await owner.get(f"/keys/{key_id}/revoke")
    assert "stops working at once, everywhere" in confirm.text
    revoked = await owner.post(f"/keys/{key_id}/revoke")
    assert revoked.status_code == 303
    page = await owner.get(revoked.headers["location"].removeprefix("/console"))
    assert "revoked" in page.text
    assert "/rotate" not in page.text


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

"""The applications pages: the API's rules, shown as pages."""

from __future__ import annotations

import re

from sqlalchemy.ext.asyncio import AsyncSession

from consoles import ConsoleUser, SignIn
from factories import create_tenant

FIELDS = {"name": "Zapier sync", "developer_email": "dev@partner.example"}


async def _create(owner: ConsoleUser, **fields: object) -> str:
    response = await owner.post("/applications", {**FIELDS, **fields})
    assert response.status_code == 303, response.text
    return str(response.headers["location"]).removeprefix("/console").split("?")[0]


async def test_create_edit_and_delete_after_a_confirmation(owner: ConsoleUser) -> None:
    path = await _create(owner, permissions=["contacts:read"], description="Two-way sync")
    page = await owner.get(path)
    assert "Zapier sync" in page.text
    assert "contacts:read" in page.text
    edit = await owner.get(path + "/edit")
    assert 'value="contacts:read" checked' in edit.text
    saved = await owner.post(path, {**FIELDS, "name": "Zapier", "permissions": ["deals:read"]})
    assert saved.status_code == 303
    page = await owner.get(path)
    assert "<h1>Zapier</h1>" in page.text
    assert "deals:read" in page.text
    assert "contacts:read" not in page.text
    confirm = await owner.get(path + "/delete")
    assert "stops working at once" in confirm.text
    deleted = await owner.post(path + "/delete")
    assert deleted.status_code == 303
    assert (await owner.get(path)).status_code == 404


async def test_a_refused_change_is_shown_inline_and_changes_nothing(owner: ConsoleUser) -> None:
    path = await _create(owner, permissions=["contacts:read"])
    # A scope outside the catalogue (a forged checkbox): the service refuses it.
    response = await owner.post(
        path, {**FIELDS, "name": "Renamed", "permissions": ["billing:steal"]}
    )
    assert response.status_code == 422
    assert 'role="alert"' in response.text
    assert 'value="Renamed"' in response.text  # what was typed is kept
    page = await owner.get(path)
    assert "Renamed" not in page.text
    assert "contacts:read" in page.text


async def test_a_member_reads_applications_but_cannot_change_them(
    owner: ConsoleUser, member: ConsoleUser
) -> None:
    path = await _create(owner)
    listing = await member.get("/applications")
    assert "Zapier sync" in listing.text
    assert "Create an app" not in listing.text
    page = await member.get(path)
    assert "/edit" not in page.text
    assert "/delete" not in page.text
    assert "Issue a key" not in page.text
    for target, data in (
        ("/applications", FIELDS),
        (path, {**FIELDS, "name": "Taken over"}),
        (path + "/delete", {}),
    ):
        response = await member.post(target, data)
        assert response.status_code == 403, target
        assert "role in this account does not allow" in response.text
    assert (await member.get("/applications/new")).status_code == 403
    assert "Zapier sync" in (await owner.get(path)).text


async def test_another_accounts_application_is_not_found(
    session: AsyncSession, owner: ConsoleUser, sign_in: SignIn
) -> None:
    path = await _create(owner)
    stranger = await sign_in((await create_tenant(session, name="Initech")).owner)
    for target in (path, path + "/edit", path + "/delete"):
        assert (await stranger.get(target)).status_code == 404, target
    assert (await stranger.post(path + "/delete")).status_code == 404
    assert (await stranger.post(path, FIELDS)).status_code == 404
    assert (await owner.get(path)).status_code == 200


async def test_the_empty_list_says_what_to_do_first(
    owner: ConsoleUser, member: ConsoleUser
) -> None:
    assert "Create one for each integration" in (await owner.get("/applications")).text
    assert "An admin of this account creates them" in (await member.get("/applications")).text


async def test_input_is_escaped(owner: ConsoleUser) -> None:
    path = await _create(owner, name="<script>alert(1)</script>")
    page = await owner.get(path)
    assert "<script>alert(1)</script>" not in page.text
    assert re.search(r"&lt;script&gt;alert\(1\)&lt;/script&gt;", page.text)

"""Webhook endpoints: created with their secret shown once and kept encrypted, changed, enabled
and disabled, rotated with a grace period; admins write, members read, and another account's
endpoints do not exist."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from factories import auth, create_endpoint, create_personal_key, create_tenant, create_user
from keyservice.models import AuditEvent, Role, WebhookEndpoint, utcnow
from keyservice.webhooks import service

URL = "https://hooks.partner.example/keyservice"
PATH = "/v1/webhooks/endpoints"


async def test_an_endpoint_shows_its_secret_once_and_keeps_it_encrypted(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    created = await create_endpoint(
        client, tenant, URL, description="Partner sync", event_types=["key.created"]
    )
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert created["url"] == URL
    assert created["event_types"] == ["key.created"]
    assert created["enabled"] is True

    read = await client.get(f"{PATH}/{created['id']}", headers=tenant.headers)
    listed = await client.get(PATH, headers=tenant.headers)
    assert read.status_code == listed.status_code == 200
    assert secret not in read.text
    assert secret not in listed.text
    assert "secret" not in read.json()
    assert [e["id"] for e in listed.json()["data"]] == [created["id"]]

    stored = await session.get(WebhookEndpoint, uuid.UUID(created["id"]))
    assert stored is not None
    assert secret not in stored.secret_encrypted
    assert app.state.keyring.box().decrypt(stored.secret_encrypted) == secret
    audit = (await session.scalars(select(AuditEvent.details))).all()
    assert secret not in str(audit)


async def test_an_endpoint_is_changed_disabled_enabled_and_deleted(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    created = await create_endpoint(client, tenant, URL)
    path = f"{PATH}/{created['id']}"

    response = await client.patch(
        path,
        headers=tenant.headers,
        json={"url": URL + "/v2", "event_types": ["key.revoked", "key.revoked"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["url"] == URL + "/v2"
    assert response.json()["event_types"] == ["key.revoked"]
    assert response.json()["description"] == ""

    disabled = (await client.post(f"{path}/disable", headers=tenant.headers)).json()
    assert disabled["enabled"] is False
    assert disabled["disabled_reason"] == "manual"
    assert disabled["disabled_at"] is not None
    enabled = (await client.post(f"{path}/enable", headers=tenant.headers)).json()
    assert enabled["enabled"] is True
    assert enabled["disabled_reason"] is enabled["disabled_at"] is None

    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    assert (await client.get(PATH, headers=tenant.headers)).json()["data"] == []


async def test_rotation_signs_with_both_secrets_for_the_grace_period(
    app: FastAPI, client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    created = await create_endpoint(client, tenant, URL)
    path = f"{PATH}/{created['id']}/rotate-secret"

    response = await client.post(path, headers=tenant.headers)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    rotated_at = datetime.fromisoformat(rotated["secret_rotated_at"])
    grace_end = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert grace_end - rotated_at == timedelta(hours=24)  # the default

    box = app.state.keyring.box()
    endpoint = await session.get(WebhookEndpoint, uuid.UUID(created["id"]))
    assert endpoint is not None
    await session.refresh(endpoint)
    assert service.signing_secrets(endpoint, box=box) == [rotated["secret"], created["secret"]]

    # Without a grace period, the previous secret stops at once.
    again = (
        await client.post(path, headers=tenant.headers, json={"grace_period_seconds": 0})
    ).json()
    assert again["previous_secret_expires_at"] is None
    await session.refresh(endpoint)
    assert service.signing_secrets(endpoint, box=box) == [again["secret"]]

    # Once the grace period is over, the previous secret signs nothing.
    await client.post(path, headers=tenant.headers, json={"grace_period_seconds": 60})
    await session.refresh(endpoint)
    assert len(service.signing_secrets(endpoint, box=box)) == 2
    endpoint.previous_secret_expires_at = utcnow() - timedelta(seconds=1)
    assert len(service.signing_secrets(endpoint, box=box)) == 1


async def test_members_read_endpoints_and_admins_write_them(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    created = await create_endpoint(client, tenant, URL)
    member = await create_user(session, accounts={tenant.account.id: Role.member})
    admin = await create_user(session, accounts={tenant.account.id: Role.admin})
    member_key = await create_personal_key(session, member, scopes=["keyservice:*"])
    admin_key = await create_personal_key(session, admin, scopes=["keyservice:*"])
    path = f"{PATH}/{created['id']}"

    assert (await client.get(PATH, headers=auth(member_key))).status_code == 200
    assert (await client.get(path, headers=auth(member_key))).status_code == 200
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", PATH, {"url": URL}),
        ("PATCH", path, {"description": "mine"}),
        ("POST", f"{path}/disable", None),
        ("POST", f"{path}/rotate-secret", None),
        ("DELETE", path, None),
    ]
    for method, target, body in writes:
        response = await client.request(method, target, json=body, headers=auth(member_key))
        assert response.status_code == 403, (method, target, response.text)
        assert response.json()["type"] == "urn:keyservice:problem:insufficient-role"
    unchanged = (await client.get(path, headers=tenant.headers)).json()
    assert unchanged["enabled"] is True
    assert unchanged["description"] == ""

    response = await client.patch(path, headers=auth(admin_key), json={"description": "ours"})
    assert response.status_code == 200, response.text


async def test_another_accounts_endpoint_is_not_found(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    victim = await create_tenant(session, "Victim")
    intruder = await create_tenant(session, "Intruder")
    created = await create_endpoint(client, victim, URL)
    path = f"{PATH}/{created['id']}"
    for method, target, body in [
        ("GET", path, None),
        ("PATCH", path, {"url": "https://intruder.example/"}),
        ("DELETE", path, None),
        ("POST", f"{path}/disable", None),
        ("POST", f"{path}/enable", None),
        ("POST", f"{path}/rotate-secret", None),
    ]:
        response = await client.request(method, target, json=body, headers=intruder.headers)
        assert response.status_code == 404, (method, target, response.text)
        assert response.json()["type"] == "urn:keyservice:problem:not-found"
    listed = await client.get(PATH, headers=intruder.headers)
    assert created["id"] not in listed.text
    unchanged = (await client.get(path, headers=victim.headers)).json()
    assert unchanged["url"] == URL
    assert unchanged["enabled"] is True


async def test_an_unknown_event_type_is_refused_naming_it_and_nothing_is_written(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        PATH,
        headers=tenant.headers,
        json={"url": URL, "event_types": ["key.created", "key.exploded"]},
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:keyservice:problem:unknown-event-type"
    assert problem["field"] == "event_types.1"
    assert "key.exploded" in problem["detail"]
    assert (await client.get(PATH, headers=tenant.headers)).json()["data"] == []

    created = await create_endpoint(client, tenant, URL, event_types=["key.created"])
    response = await client.patch(
        f"{PATH}/{created['id']}", headers=tenant.headers, json={"event_types": ["nope.nope"]}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "event_types.0"
    read = (await client.get(f"{PATH}/{created['id']}", headers=tenant.headers)).json()
    assert read["event_types"] == ["key.created"]

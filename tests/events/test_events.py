"""Events: each change records its event, with its documented payload, in the change's own
transaction; an account sees its own events only, and only those its key could read anyway."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import client_for
from factories import Tenant, auth, create_application, create_key, create_tenant, create_user
from keyservice.accounts import service as accounts_service
from keyservice.applications import service as applications_service
from keyservice.events import service as events_service
from keyservice.events.catalogue import BY_TYPE, UsageThresholdData, dump
from keyservice.keys import service as keys_service
from keyservice.models import Event, Role
from keyservice.security import hash_key
from keyservice.verification.service import Principal


async def _events(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get("/v1/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    for event in events:
        _check_documented(event)
    return events


def _check_documented(event: dict[str, Any]) -> None:
    """The event's data is exactly its type's documented payload: it validates against the
    model, and the model gives back what was recorded."""
    model = BY_TYPE[event["type"]].model
    assert dump(model.model_validate(event["data"])) == event["data"], event


def _no_secret(events: list[dict[str, Any]], *secrets: str) -> None:
    text = str(events)
    for secret in secrets:
        assert secret not in text
        assert hash_key(secret) not in text


async def _principal(app: FastAPI, tenant: Tenant) -> Principal:
    verified = await app.state.verifier.verify(tenant.owner_key, account_id=tenant.account.id)
    principal: Principal = verified.principal
    return principal


async def test_an_application_keys_life_is_recorded_with_its_documented_payloads(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(
        client, tenant, application["id"], scopes=["contacts:read"], monthly_quota=1000
    )
    path = f"/v1/keys/{created['id']}"
    response = await client.patch(
        path,
        headers=tenant.headers,
        json={"name": "Renamed", "rate_limit": {"limit": 10, "period_seconds": 60}},
    )
    assert response.status_code == 200, response.text
    rotated = (
        await client.post(
            f"{path}/rotate", headers=tenant.headers, json={"grace_period_seconds": 60}
        )
    ).json()
    revoked = (await client.post(f"{path}/revoke", headers=tenant.headers)).json()
    # Revoking again changes nothing, and records nothing.
    await client.post(f"{path}/revoke", headers=tenant.headers)

    events = await _events(client, tenant.headers, key_id=created["id"])
    assert [e["type"] for e in events] == [
        "key.revoked",
        "key.rotated",
        "key.updated",
        "key.created",
    ]
    assert {e["key_id"] for e in events} == {created["id"]}
    ids = {
        "key_id": created["id"],
        "kind": "application",
        "application_id": application["id"],
        "user_id": None,
    }
    revoked_event, rotated_event, updated_event, created_event = (e["data"] for e in events)
    assert created_event == {
        **ids,
        "name": "Production Integration",
        "hint": created["hint"],
        "environment": "live",
        "scopes": ["contacts:read"],
        "expires_at": None,
        "rate_limit": None,
        "monthly_quota": 1000,
        "alert_quota_percents": None,
        "alert_rate_limited_refusals": None,
    }
    assert updated_event == {
        **ids,
        "changes": {
            "name": {"from": "Production Integration", "to": "Renamed"},
            "rate_limit": {"from": None, "to": {"limit": 10, "period_seconds": 60, "burst": 10}},
        },
    }
    assert rotated_event["hint"] == rotated["hint"] != created["hint"]
    rotated_at = datetime.fromisoformat(rotated_event["rotated_at"])
    assert rotated_at == datetime.fromisoformat(rotated["last_rotated_at"])
    grace_end = datetime.fromisoformat(rotated_event["previous_secret_expires_at"])
    assert (grace_end - rotated_at).total_seconds() == 60
    assert revoked_event == {**ids, "revoked_at": revoked_event["revoked_at"]}
    assert datetime.fromisoformat(revoked_event["revoked_at"]) == datetime.fromisoformat(
        revoked["revoked_at"]
    )
    _no_secret(events, created["key"], rotated["key"])


async def test_a_rotation_without_grace_says_the_old_secret_died_at_once(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    await client.post(f"/v1/keys/{created['id']}/rotate", headers=tenant.headers)
    (event,) = await _events(client, tenant.headers, type="key.rotated")
    assert event["data"]["previous_secret_expires_at"] is None


async def test_a_personal_keys_events_are_recorded_in_each_account_its_user_joined(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    # The owner joins a second account, and is invited to a third without accepting.
    other = await create_tenant(session, "Other")
    invited = await client.post(
        "/v1/account/members", headers=other.headers, json={"email": tenant.owner.email}
    )
    token = invited.json()["invitation_token"]
    await client.post(
        "/v1/users/me/invitations/accept", headers=tenant.headers, json={"token": token}
    )
    third = await create_tenant(session, "Third")
    await client.post(
        "/v1/account/members", headers=third.headers, json={"email": tenant.owner.email}
    )

    response = await client.post(
        "/v1/users/me/keys",
        headers=tenant.headers,
        json={"name": "Deploys", "scopes": ["keyservice:keys:read"]},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    path = f"/v1/users/me/keys/{created['id']}"
    await client.patch(path, headers=tenant.headers, json={"name": "Deploy script"})
    rotated = (await client.post(f"{path}/rotate", headers=tenant.headers)).json()
    await client.post(f"{path}/revoke", headers=tenant.headers)

    expected = ["key.revoked", "key.rotated", "key.updated", "key.created"]
    for account in (tenant, other):
        headers = {**tenant.headers, "X-Account-Id": str(account.account.id)}
        events = await _events(client, headers, key_id=created["id"])
        assert [e["type"] for e in events] == expected
        assert events[-1]["data"]["kind"] == "personal"
        assert events[-1]["data"]["user_id"] == str(tenant.owner.id)
        assert events[-1]["data"]["application_id"] is None
        _no_secret(events, created["key"], rotated["key"])
    assert await _events(client, third.headers, key_id=created["id"]) == []


async def test_the_owner_key_of_a_new_account_is_recorded_as_created(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    (event,) = await _events(client, tenant.headers, type="key.created")
    assert event["data"]["name"] == "Owner key (bootstrap)"
    assert event["data"]["kind"] == "personal"
    assert event["data"]["user_id"] == str(tenant.owner.id)
    _no_secret([event], tenant.owner_key)


async def test_an_applications_life_is_recorded_with_its_documented_payloads(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, description="Sync", monthly_quota=5000)
    path = f"/v1/applications/{application['id']}"
    response = await client.patch(
        path,
        headers=tenant.headers,
        json={
            "permissions": ["contacts:read"],
            "developer_email": "ops@partner.example",
            "rate_limit": {"limit": 5},
            "monthly_quota": None,
        },
    )
    assert response.status_code == 200, response.text
    # A change to nothing records nothing.
    await client.patch(path, headers=tenant.headers, json={"permissions": ["contacts:read"]})
    first = await create_key(client, tenant, application["id"])
    second = await create_key(client, tenant, application["id"])
    assert (await client.delete(path, headers=tenant.headers)).status_code == 204

    events = [
        e for e in await _events(client, tenant.headers) if e["type"].startswith("application.")
    ]
    assert [e["type"] for e in events] == [
        "application.deleted",
        "application.updated",
        "application.created",
    ]
    assert {e["key_id"] for e in events} == {None}
    deleted, updated, created = (e["data"] for e in events)
    assert created == {
        "application_id": application["id"],
        "name": "Zapier sync",
        "developer_email": "dev@partner.example",
        "description": "Sync",
        "permissions": ["contacts:read", "contacts:write", "deals:*"],
        "rate_limit": None,
        "monthly_quota": 5000,
    }
    assert updated == {
        "application_id": application["id"],
        "changes": {
            "developer_email": {"from": "dev@partner.example", "to": "ops@partner.example"},
            "permissions": {
                "from": ["contacts:read", "contacts:write", "deals:*"],
                "to": ["contacts:read"],
            },
            "rate_limit": {"from": None, "to": {"limit": 5, "period_seconds": 1, "burst": 5}},
            "monthly_quota": {"from": 5000, "to": None},
        },
    }
    assert deleted == {
        "application_id": application["id"],
        "name": "Zapier sync",
        "key_ids": [first["id"], second["id"]],
    }
    _no_secret(events, first["key"], second["key"])


async def test_members_added_updated_and_removed_with_their_documented_payloads(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    password = "correct horse battery staple"
    response = await client.post(
        "/v1/account/members",
        headers=tenant.headers,
        json={"email": "Dana@Example.com", "role": "member", "password": password},
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["user_id"]
    path = f"/v1/account/members/{user_id}"
    await client.patch(path, headers=tenant.headers, json={"role": "admin"})
    await client.patch(path, headers=tenant.headers, json={"role": "admin"})  # no change
    assert (await client.delete(path, headers=tenant.headers)).status_code == 204

    events = await _events(client, tenant.headers)
    members = [e for e in events if e["type"].startswith("member.")]
    assert [(e["type"], e["key_id"]) for e in members] == [
        ("member.removed", None),
        ("member.updated", None),
        ("member.added", None),
    ]
    member = {"user_id": user_id, "email": "dana@example.com"}
    assert [e["data"] for e in members] == [
        {**member, "role": "admin"},
        {**member, "changes": {"role": {"from": "member", "to": "admin"}}},
        {**member, "role": "member", "invited": False},
    ]
    _no_secret(events, password)


async def test_an_invited_user_is_added_when_they_accept(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    email, user_id = first.owner.email, str(first.owner.id)

    async def member_events(tenant: Tenant) -> list[dict[str, Any]]:
        headers = {**tenant.headers, "X-Account-Id": str(tenant.account.id)}
        events = await _events(client, headers)
        return [e for e in events if e["type"].startswith("member.")]

    response = await client.post(
        "/v1/account/members", headers=second.headers, json={"email": email, "role": "member"}
    )
    token = response.json()["invitation_token"]
    path = f"/v1/account/members/{user_id}"
    await client.patch(path, headers=second.headers, json={"role": "admin"})
    # An invitation is no member yet: nothing so far.
    assert await member_events(second) == []

    response = await client.post(
        "/v1/users/me/invitations/accept", headers=first.headers, json={"token": token}
    )
    assert response.status_code == 200, response.text
    events = await member_events(second)
    assert [e["data"] for e in events] == [
        {"user_id": user_id, "email": email, "role": "admin", "invited": True}
    ]
    _no_secret(events, token, first.owner_key)
    # The account they come from hears nothing of it.
    assert await member_events(first) == []

    # An invitation withdrawn before it is accepted records nothing either.
    third = await create_tenant(session, "Third")
    await client.post("/v1/account/members", headers=third.headers, json={"email": email})
    assert (await client.delete(path, headers=third.headers)).status_code == 204
    assert await member_events(third) == []


async def test_usage_alerts_are_recorded_once_with_their_documented_payloads(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(rate_limited_alert_refusals=2)
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        application = await create_application(client, tenant)
        quota = await create_key(client, tenant, application["id"], monthly_quota=5)
        rate = await create_key(
            client, tenant, application["id"], rate_limit={"limit": 1, "period_seconds": 3600}
        )
        for _ in range(7):
            for key in (quota, rate):
                await client.post("/v1/verify", json={"key": key["key"]})
            await app.state.verifier.usage.flush()

        quota_events = await _events(client, tenant.headers, key_id=quota["id"])
        rate_events = await _events(client, tenant.headers, key_id=rate["id"])

    thresholds = [
        {k: v for k, v in e["data"].items() if k != "month"}  # the model checks its form
        for e in quota_events
        if e["type"] == "usage.threshold" and e["data"]["kind"] == "monthly_quota"
    ]
    assert sorted(thresholds, key=lambda d: d["percent"]) == [
        {"key_id": quota["id"], "kind": "monthly_quota", "percent": 80, "quota": 5, "used": 4},
        {"key_id": quota["id"], "kind": "monthly_quota", "percent": 100, "quota": 5, "used": 5},
    ]
    (rate_limited,) = [e["data"] for e in rate_events if e["type"] == "usage.threshold"]
    assert rate_limited["key_id"] == rate["id"]
    assert rate_limited["kind"] == "rate_limited"
    assert rate_limited["threshold"] == 2
    assert rate_limited["rate_limited"] >= 2
    hour = datetime.fromisoformat(rate_limited["hour"])
    assert hour.utcoffset() == timedelta(0)
    assert (hour.minute, hour.second) == (0, 0)


async def test_a_change_rolled_back_records_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    app: FastAPI,
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    member = await create_user(session, accounts={tenant.account.id: Role.admin})
    principal = await _principal(app, tenant)
    before = await _events(client, tenant.headers)

    async with sessionmaker() as attempt:
        await keys_service.revoke_key(attempt, principal, uuid.UUID(created["id"]))
        await applications_service.delete_application(
            attempt, principal, uuid.UUID(application["id"])
        )
        await accounts_service.remove_member(attempt, principal, user_id=member.id)
        # The events are part of the changes' transaction...
        recorded = await attempt.scalars(
            select(Event.type).where(Event.account_id == tenant.account.id)
        )
        assert {"key.revoked", "application.deleted", "member.removed"} <= set(recorded)
        # ...and go with it.
        await attempt.rollback()

    assert await _events(client, tenant.headers) == before
    response = await client.get(f"/v1/applications/{application['id']}", headers=tenant.headers)
    assert response.status_code == 200
    key = (await client.get(f"/v1/keys/{created['id']}", headers=tenant.headers)).json()
    assert key["status"] == "active"
    response = await client.get(f"/v1/account/members/{member.id}", headers=tenant.headers)
    assert response.status_code == 200


async def test_another_accounts_events_are_never_shown(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    victim = await create_tenant(session, "Victim")
    intruder = await create_tenant(session, "Intruder")
    application = await create_application(client, victim)
    key = await create_key(client, victim, application["id"])
    await client.post(f"/v1/keys/{key['id']}/revoke", headers=victim.headers)

    assert len(await _events(client, victim.headers, key_id=key["id"])) == 2
    assert await _events(client, intruder.headers, key_id=key["id"]) == []
    response = await client.get("/v1/events", headers=intruder.headers)
    assert key["id"] not in response.text
    assert application["id"] not in response.text
    assert str(victim.owner.id) not in response.text


async def test_a_key_sees_only_the_events_it_could_read_otherwise(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    await create_key(client, tenant, application["id"])

    async def personal_key(*scopes: str) -> dict[str, str]:
        response = await client.post(
            "/v1/users/me/keys", headers=tenant.headers, json={"name": "n", "scopes": scopes}
        )
        return auth(response.json()["key"])

    usage_only = await personal_key("keyservice:usage:read")
    assert [e for e in await _events(client, usage_only) if e["type"].startswith("key.")] == []
    both = await personal_key("keyservice:usage:read", "keyservice:keys:read")
    assert {e["type"] for e in await _events(client, both)} >= {"key.created"}
    # keyservice:usage:read stays what the route takes.
    keys_only = await personal_key("keyservice:keys:read")
    response = await client.get("/v1/events", headers=keys_only)
    assert response.status_code == 403
    assert response.json()["type"] == "urn:keyservice:problem:insufficient-scope"


async def test_events_filter_by_type_and_key_and_page_with_a_cursor(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    keys = [await create_key(client, tenant, application["id"]) for _ in range(5)]
    await client.post(f"/v1/keys/{keys[0]['id']}/revoke", headers=tenant.headers)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"type": "key.created", "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/v1/events", params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["data"]) <= 2
        assert {e["type"] for e in page["data"]} <= {"key.created"}
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # The five keys and the owner key, each once.
    assert len(seen) == len(set(seen)) == 6

    revoked = await _events(client, tenant.headers, key_id=keys[0]["id"])
    assert [e["type"] for e in revoked] == ["key.revoked", "key.created"]
    both = await _events(client, tenant.headers, key_id=keys[0]["id"], type="key.revoked")
    assert [e["id"] for e in both] == [revoked[0]["id"]]
    response = await client.get("/v1/events", params={"cursor": "garbage"}, headers=tenant.headers)
    assert response.status_code == 422


async def test_console_logins_and_logouts_record_no_key_events(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    password = "correct horse battery staple"
    response = await client.post(
        "/v1/account/members",
        headers=tenant.headers,
        json={"email": "admin@example.com", "role": "admin", "password": password},
    )
    assert response.status_code == 201, response.text
    before = await _events(client, tenant.headers)
    response = await client.post(
        "/v1/sessions", json={"email": "admin@example.com", "password": password}
    )
    session_key = response.json()["key"]
    assert (
        await client.delete("/v1/sessions/current", headers=auth(session_key))
    ).status_code == 204
    assert await _events(client, tenant.headers) == before


KEYSERVICE_EVENT_TYPES = {
    "key.created",
    "key.updated",
    "key.rotated",
    "key.revoked",
    "application.created",
    "application.updated",
    "application.deleted",
    "member.added",
    "member.updated",
    "member.removed",
    "usage.threshold",
    "webhook.endpoint.disabled",
    "key.expiring",
    "key.expired",
}


async def test_the_catalogue_lists_every_type_with_its_schema_and_a_valid_example(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    # Any key of the account reads it, even one holding none of keyservice's scopes.
    response = await client.post(
        "/v1/users/me/keys",
        headers=tenant.headers,
        json={"name": "Receiver", "scopes": ["contacts:read"]},
    )
    response = await client.get("/v1/event-types", headers=auth(response.json()["key"]))
    assert response.status_code == 200, response.text
    listed = response.json()["data"]
    # keyservice's own, then the product's (the deployment's default catalogue).
    assert [t["type"] for t in listed] == [
        *BY_TYPE,
        "contact.created",
        "deal.won",
        "automation.triggered",
    ]
    assert set(BY_TYPE) == KEYSERVICE_EVENT_TYPES
    for entry in listed[: len(BY_TYPE)]:
        model = BY_TYPE[entry["type"]].model
        assert entry["description"]
        assert entry["scope"].startswith("keyservice:")
        assert entry["scope"].endswith(":read")
        assert entry["data_schema"] == model.model_json_schema()
        assert dump(model.model_validate(entry["data_example"])) == entry["data_example"]

    assert (await client.get("/v1/event-types")).status_code == 401


async def test_only_a_catalogued_payload_is_recorded_and_a_dedupe_key_records_once(
    session: AsyncSession,
) -> None:
    tenant = await create_tenant(session)

    class Undocumented(BaseModel):
        secret: str

    with pytest.raises(TypeError, match="Undocumented"):
        await events_service.record(
            session, account_id=tenant.account.id, data=Undocumented(secret="x")
        )
    data = UsageThresholdData.model_validate(BY_TYPE["usage.threshold"].example)
    for _ in range(2):
        await events_service.record(
            session, account_id=tenant.account.id, data=data, dedupe_key="once"
        )
    recorded = await session.scalars(select(Event).where(Event.dedupe_key == "once"))
    assert [(e.type, e.data) for e in recorded] == [("usage.threshold", dump(data))]

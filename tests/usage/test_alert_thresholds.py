"""Alert thresholds per account and per key: set through the account and key APIs (null
inherits: key, then account, then deployment), shown in force on keys, the account and usage,
carried in the key's cached record (no query per request), and the ones that raise
``usage.threshold`` events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import (
    Tenant,
    auth,
    create_application,
    create_key,
    create_personal_key,
    create_tenant,
    create_user,
)
from keyservice.config import Settings
from keyservice.models import Role
from keyservice.ratelimit.policy import AlertThresholds
from keyservice.security import hash_key
from keyservice.verification import service as verification

DEFAULT = {"quota_percents": [80, 100], "rate_limited_refusals": 100}


async def _alerts(client: httpx.AsyncClient, tenant: Tenant, key_id: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/v1/events",
        params={"type": "usage.threshold", "key_id": key_id},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    return [event["data"] for event in response.json()["data"]]


async def _patch_account(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> Any:
    response = await client.patch("/v1/account", json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_thresholds_inherit_key_then_account_then_deployment(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    account = (await client.get("/v1/account", headers=tenant.headers)).json()
    assert account["alert_quota_percents"] is None
    assert account["alert_rate_limited_refusals"] is None
    assert account["alert_thresholds"] == DEFAULT
    assert account["alert_emails_to_admins"] is False

    application = await create_application(client, tenant)
    own = await create_key(
        client, tenant, application["id"], alert_quota_percents=[100, 50, 50, 90]
    )
    inheriting = await create_key(client, tenant, application["id"], name="Inheriting")
    # Given in any order, with repeats: kept once each, in order.
    assert own["alert_quota_percents"] == [50, 90, 100]
    assert own["alert_rate_limited_refusals"] is None
    assert own["alert_thresholds"] == {
        "quota_percents": [50, 90, 100],
        "rate_limited_refusals": 100,
    }
    assert inheriting["alert_thresholds"] == DEFAULT

    updated = await _patch_account(
        client, tenant, alert_quota_percents=[75], alert_rate_limited_refusals=20
    )
    assert updated["name"] == "Acme CRM"
    assert updated["alert_thresholds"] == {"quota_percents": [75], "rate_limited_refusals": 20}
    keys = {
        k["id"]: k["alert_thresholds"]
        for k in (await client.get("/v1/keys", headers=tenant.headers)).json()["data"]
    }
    assert keys[own["id"]] == {"quota_percents": [50, 90, 100], "rate_limited_refusals": 20}
    assert keys[inheriting["id"]] == {"quota_percents": [75], "rate_limited_refusals": 20}
    usage = (await client.get("/v1/usage", headers=tenant.headers)).json()
    assert usage["alert_thresholds"] == {"quota_percents": [75], "rate_limited_refusals": 20}

    # A key's own, set and then given back to its account (null inherits); [] is no quota alert.
    path = f"/v1/keys/{inheriting['id']}"
    response = await client.patch(
        path,
        json={"alert_quota_percents": [], "alert_rate_limited_refusals": 5},
        headers=tenant.headers,
    )
    assert response.json()["alert_thresholds"] == {"quota_percents": [], "rate_limited_refusals": 5}
    key_usage = (await client.get(f"{path}/usage", headers=tenant.headers)).json()
    assert key_usage["alert_thresholds"] == {"quota_percents": [], "rate_limited_refusals": 5}
    response = await client.patch(
        path, json={"alert_rate_limited_refusals": None}, headers=tenant.headers
    )
    assert response.json()["alert_quota_percents"] == []
    assert response.json()["alert_thresholds"] == {
        "quota_percents": [],
        "rate_limited_refusals": 20,
    }

    # And the account's, back to the deployment's.
    updated = await _patch_account(client, tenant, alert_quota_percents=None)
    assert updated["alert_thresholds"] == {"quota_percents": [80, 100], "rate_limited_refusals": 20}
    got = (await client.get(f"/v1/keys/{own['id']}", headers=tenant.headers)).json()
    assert got["alert_thresholds"]["quota_percents"] == [50, 90, 100]


async def test_threshold_changes_are_audited_and_key_updates_recorded(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"])
    await client.patch(
        f"/v1/keys/{key['id']}", json={"alert_quota_percents": [90]}, headers=tenant.headers
    )
    await _patch_account(client, tenant, alert_rate_limited_refusals=7)
    # The same again changes nothing, and records nothing.
    await _patch_account(client, tenant, alert_rate_limited_refusals=7)

    audit = (await client.get("/v1/audit-events", headers=tenant.headers)).json()["data"]
    account_changes = [e["details"] for e in audit if e["action"] == "account.updated"]
    assert account_changes == [{"alert_rate_limited_refusals": {"from": None, "to": 7}}]
    events = (
        await client.get("/v1/events", params={"type": "key.updated"}, headers=tenant.headers)
    ).json()["data"]
    assert [e["data"]["changes"] for e in events] == [
        {"alert_quota_percents": {"from": None, "to": [90]}}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"alert_quota_percents": [0]}, "alert_quota_percents.0"),
        ({"alert_quota_percents": [80, 101]}, "alert_quota_percents.1"),
        ({"alert_quota_percents": [10, 20, 30, 40, 50, 60]}, "alert_quota_percents"),
        ({"alert_quota_percents": "80"}, "alert_quota_percents"),
        ({"alert_rate_limited_refusals": 0}, "alert_rate_limited_refusals"),
        ({"alert_emails_to_admins": "often"}, "alert_emails_to_admins"),
    ],
)
async def test_bad_thresholds_are_refused_naming_the_field(
    client: httpx.AsyncClient, session: AsyncSession, body: dict[str, Any], field: str
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"])
    targets: list[tuple[str, str, dict[str, Any]]] = [("PATCH", "/v1/account", {})]
    if not field.startswith("alert_emails"):
        targets += [
            ("PATCH", f"/v1/keys/{key['id']}", {}),
            (
                "POST",
                f"/v1/applications/{application['id']}/keys",
                {"name": "k", "scopes": ["contacts:read"]},
            ),
        ]
    for method, path, extra in targets:
        response = await client.request(method, path, json=body | extra, headers=tenant.headers)
        assert response.status_code == 422, (path, response.text)
        [error] = response.json()["errors"]
        assert ".".join(map(str, error["loc"])) == f"body.{field}", (path, error)
    account = (await client.get("/v1/account", headers=tenant.headers)).json()
    assert account["alert_thresholds"] == DEFAULT


async def test_only_admins_change_the_accounts_alert_settings(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    member = await create_user(session, accounts={tenant.account.id: Role.member})
    key = await create_personal_key(session, member, scopes=["keyservice:*"])
    assert (await client.get("/v1/account", headers=auth(key))).status_code == 200
    response = await client.patch(
        "/v1/account", json={"alert_emails_to_admins": True}, headers=auth(key)
    )
    assert response.status_code == 403
    admin = await create_user(session, accounts={tenant.account.id: Role.admin})
    admin_key = await create_personal_key(session, admin, scopes=["keyservice:*"])
    response = await client.patch(
        "/v1/account", json={"alert_emails_to_admins": True}, headers=auth(admin_key)
    )
    assert response.status_code == 200
    assert response.json()["alert_emails_to_admins"] is True


async def test_the_keys_own_quota_percents_raise_its_alerts(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app()
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        await _patch_account(client, tenant, alert_quota_percents=[20])
        application = await create_application(client, tenant)
        own = await create_key(
            client, tenant, application["id"], monthly_quota=10, alert_quota_percents=[50]
        )
        inheriting = await create_key(client, tenant, application["id"], monthly_quota=10)
        for _ in range(6):
            for key in (own, inheriting):
                assert (await client.post("/v1/verify", json={"key": key["key"]})).json()["valid"]
        await app.state.verifier.usage.flush()
        own_alerts = await _alerts(client, tenant, own["id"])
        inherited_alerts = await _alerts(client, tenant, inheriting["id"])
    assert [(a["percent"], a["used"]) for a in own_alerts] == [(50, 5)]
    assert [(a["percent"], a["used"]) for a in inherited_alerts] == [(20, 2)]


async def test_the_accounts_refusals_threshold_raises_the_rate_limited_alert(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app()
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        application = await create_application(client, tenant)
        limit = {"limit": 1, "period_seconds": 3600}
        inheriting = await create_key(client, tenant, application["id"], rate_limit=limit)
        own = await create_key(
            client, tenant, application["id"], rate_limit=limit, alert_rate_limited_refusals=4
        )
        # Cached before the account's change: the change reaches the cached records.
        for key in (inheriting, own):
            assert (await client.post("/v1/verify", json={"key": key["key"]})).json()["valid"]
        await _patch_account(client, tenant, alert_rate_limited_refusals=2)
        for _ in range(3):
            for key in (inheriting, own):
                result = (await client.post("/v1/verify", json={"key": key["key"]})).json()
                assert result["code"] == "RATE_LIMITED"
            await app.state.verifier.usage.flush()
        inherited_alerts = await _alerts(client, tenant, inheriting["id"])
        assert await _alerts(client, tenant, own["id"]) == []
        await client.post("/v1/verify", json={"key": own["key"]})
        await app.state.verifier.usage.flush()
        own_alerts = await _alerts(client, tenant, own["id"])
    assert [(a["kind"], a["threshold"], a["rate_limited"]) for a in inherited_alerts] == [
        ("rate_limited", 2, 2)
    ]
    assert [(a["kind"], a["threshold"], a["rate_limited"]) for a in own_alerts] == [
        ("rate_limited", 4, 4)
    ]


async def test_cached_verifications_read_no_thresholds_from_the_database(
    session: AsyncSession, make_app: Callable[..., FastAPI], sql_statements: list[str]
) -> None:
    app = make_app()
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        await _patch_account(client, tenant, alert_quota_percents=[50])
        application = await create_application(client, tenant)
        key = await create_key(
            client, tenant, application["id"], rate_limit={"limit": 1000, "period_seconds": 1}
        )
        await client.post("/v1/verify", json={"key": key["key"]})
        sql_statements.clear()
        for _ in range(20):
            assert (await client.post("/v1/verify", json={"key": key["key"]})).json()["valid"]
    assert not [s for s in sql_statements if "accounts" in s or "api_keys" in s]
    record = app.state.key_cache.get(hash_key(key["key"]))
    assert record.alerts == {
        tenant.account.id: AlertThresholds(quota_percents=(50,), rate_limited_refusals=100)
    }


async def test_a_personal_keys_record_carries_each_accounts_thresholds(
    client: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    first, second = await create_tenant(session, "First"), await create_tenant(session, "Second")
    await _patch_account(client, first, alert_quota_percents=[60])
    user = await create_user(
        session, accounts={first.account.id: Role.admin, second.account.id: Role.member}
    )
    inherits = await create_personal_key(session, user, scopes=["keyservice:*"])
    records = await verification.lookup(session, [hash_key(inherits)], settings)
    assert records[hash_key(inherits)].alerts == {
        first.account.id: AlertThresholds(quota_percents=(60,), rate_limited_refusals=100),
        second.account.id: AlertThresholds(quota_percents=(80, 100), rate_limited_refusals=100),
    }
    [own] = (await client.get("/v1/users/me/keys", headers=auth(inherits))).json()["data"]
    response = await client.patch(
        f"/v1/users/me/keys/{own['id']}",
        json={"alert_rate_limited_refusals": 9},
        headers=auth(inherits),
    )
    # Shown for a personal key: its own, else the deployment's (each account's apply there).
    assert response.json()["alert_thresholds"] == {
        "quota_percents": [80, 100],
        "rate_limited_refusals": 9,
    }
    records = await verification.lookup(session, [hash_key(inherits)], settings)
    assert {a.rate_limited_refusals for a in records[hash_key(inherits)].alerts.values()} == {9}


async def test_an_accounts_change_reaches_the_other_instances_cache(
    instances: tuple[httpx.AsyncClient, httpx.AsyncClient, FastAPI], tenant: Tenant
) -> None:
    a, b, second = instances
    application = await create_application(a, tenant)
    created = await create_key(a, tenant, application["id"])
    assert (await b.post("/v1/verify", json={"key": created["key"]})).json()["valid"]
    key_hash = hash_key(created["key"])
    assert second.state.key_cache.get(key_hash) is not None

    await _patch_account(a, tenant, alert_rate_limited_refusals=3)
    started = time.monotonic()
    while second.state.key_cache.get(key_hash) is not None:
        assert time.monotonic() - started < 1.0, "the other instance kept the stale record"
        await asyncio.sleep(0.01)
    assert (await b.post("/v1/verify", json={"key": created["key"]})).json()["valid"]
    record = second.state.key_cache.get(key_hash)
    assert record.alerts[uuid.UUID(str(tenant.account.id))].rate_limited_refusals == 3

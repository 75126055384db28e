"""Usage metering: what each key did, per endpoint and hour, and the usage API that shows it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import client_for
from factories import auth, create_application, create_key, create_personal_keys, create_tenant
from keyservice.models import ApiKey, UsageCounter
from keyservice.usage import recorder as recorder_module
from keyservice.usage.recorder import UsageRecorder
from keyservice.verification.endpoints import endpoint_template


async def _flush(app: FastAPI) -> None:
    await app.state.verifier.usage.flush()


async def _alerts(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await client.get("/v1/events", params={"type": "usage.threshold"}, headers=headers)
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_counts_per_endpoint_allowed_and_refused(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, monthly_quota=1000)
    created = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    key = created["key"]
    for _ in range(3):
        await client.post("/v1/verify", json={"key": key, "endpoint": "GET /v1/contacts"})
    await client.post("/v1/verify", json={"key": key, "endpoint": "POST /v1/contacts"})
    await client.post(
        "/v1/verify",
        json={"key": key, "endpoint": "POST /v1/deals", "scopes": ["deals:write"]},
    )
    await client.get("/v1/forward-auth/v1/contacts/42", headers=auth(key))
    await _flush(app)

    usage = (await client.get(f"/v1/keys/{created['id']}/usage", headers=tenant.headers)).json()
    assert usage["current_hour"] == {"allowed": 5, "refused": 1, "rate_limited": 0}
    assert usage["current_month"] == {"allowed": 5, "refused": 1, "rate_limited": 0}
    assert usage["top_endpoints"] == [
        {"endpoint": "GET /v1/contacts", "allowed": 3, "refused": 0, "rate_limited": 0},
        {"endpoint": "GET /v1/contacts/{id}", "allowed": 1, "refused": 0, "rate_limited": 0},
        {"endpoint": "POST /v1/contacts", "allowed": 1, "refused": 0, "rate_limited": 0},
        {"endpoint": "POST /v1/deals", "allowed": 0, "refused": 1, "rate_limited": 0},
    ]
    series = usage["series"]
    assert series["granularity"] == "hour"
    assert len(series["points"]) == 24
    assert sum(p["allowed"] for p in series["points"]) == 5
    assert series["points"][-1]["allowed"] == 5  # the current hour, last
    assert usage["limits"]["monthly_quota"] == 1000
    assert usage["limits"]["quota_remaining"] == 995
    resets = datetime.fromisoformat(usage["limits"]["quota_resets_at"])
    assert resets.day == 1
    assert resets > datetime.now(UTC)

    listed = (await client.get(f"/v1/keys/{created['id']}", headers=tenant.headers)).json()
    assert listed["last_used_at"] is not None

    by_day = (
        await client.get(
            f"/v1/keys/{created['id']}/usage",
            params={"granularity": "day"},
            headers=tenant.headers,
        )
    ).json()["series"]
    assert len(by_day["points"]) == 30
    assert by_day["points"][-1]["allowed"] == 5


async def test_counts_accumulate_across_flushes(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    for _ in range(3):
        for _ in range(4):
            await client.post("/v1/verify", json={"key": created["key"], "endpoint": "GET /x"})
        await _flush(app)
    usage = (await client.get(f"/v1/keys/{created['id']}/usage", headers=tenant.headers)).json()
    assert usage["current_hour"]["allowed"] == 12


async def test_endpoints_are_bounded_per_key_and_hour(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(usage_max_endpoints=3)
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        application = await create_application(client, tenant)
        created = await create_key(client, tenant, application["id"])
        for n in range(6):
            await client.post("/v1/verify", json={"key": created["key"], "endpoint": f"GET /e{n}"})
        await _flush(app)
        usage = (await client.get(f"/v1/keys/{created['id']}/usage", headers=tenant.headers)).json()
    counts = {e["endpoint"]: e["allowed"] for e in usage["top_endpoints"]}
    assert counts == {"GET /e0": 1, "GET /e1": 1, "GET /e2": 1, "other": 3}


async def test_management_calls_count_by_route_template(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    await client.get(f"/v1/applications/{application['id']}", headers=tenant.headers)
    await _flush(app)
    usage = (await client.get("/v1/usage", headers=tenant.headers)).json()
    endpoints = {e["endpoint"] for e in usage["top_endpoints"]}
    assert "GET /v1/applications/{application_id}" in endpoints
    assert "POST /v1/applications" in endpoints
    assert usage["top_keys"][0]["name"] == "Owner key (bootstrap)"


async def test_account_usage_is_the_accounts_own(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    first = await create_tenant(session, "First")
    second = await create_tenant(session, "Second")
    first_app = await create_application(client, first)
    key = await create_key(client, first, first_app["id"])
    for _ in range(4):
        await client.post("/v1/verify", json={"key": key["key"], "endpoint": "GET /secret"})
    await _flush(app)
    theirs = (await client.get("/v1/usage", headers=second.headers)).json()
    assert "GET /secret" not in str(theirs)
    assert key["id"] not in str(theirs)
    response = await client.get(f"/v1/keys/{key['id']}/usage", headers=second.headers)
    assert response.status_code == 404
    mine = (await client.get("/v1/usage", headers=first.headers)).json()
    assert {
        "endpoint": "GET /secret",
        "allowed": 4,
        "refused": 0,
        "rate_limited": 0,
    } in mine["top_endpoints"]


async def test_ranges_are_bounded(client: httpx.AsyncClient, session: AsyncSession) -> None:
    tenant = await create_tenant(session)
    now = datetime.now(UTC)
    for params in (
        {"granularity": "hour", "start": (now - timedelta(days=40)).isoformat()},
        {"granularity": "day", "start": (now - timedelta(days=400)).isoformat()},
        {"start": now.isoformat(), "end": (now - timedelta(days=1)).isoformat()},
        {"granularity": "minute"},
        {"end": "0001-01-01T00:00:00Z"},
        {"start": "0001-01-01T00:30:00+01:00"},
        {"start": "2026-01-01T00:00:00"},
    ):
        response = await client.get("/v1/usage", params=params, headers=tenant.headers)
        assert response.status_code == 422, params


async def test_keeping_being_rate_limited_raises_one_alert_per_hour(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(rate_limited_alert_refusals=3)
    async with client_for(app) as client:
        tenant = await create_tenant(session)
        application = await create_application(client, tenant)
        created = await create_key(
            client, tenant, application["id"], rate_limit={"limit": 1, "period_seconds": 3600}
        )
        # Refusals for a missing scope are not the limit's doing: no alert for them.
        for _ in range(5):
            await client.post("/v1/verify", json={"key": created["key"], "scopes": ["deals:write"]})
        await _flush(app)
        assert await _alerts(client, tenant.headers) == []
        for _ in range(6):
            await client.post("/v1/verify", json={"key": created["key"]})
            await _flush(app)
        events = await _alerts(client, tenant.headers)
        usage = (await client.get(f"/v1/keys/{created['id']}/usage", headers=tenant.headers)).json()
    assert len(events) == 1
    assert events[0]["type"] == "usage.threshold"
    assert events[0]["data"]["kind"] == "rate_limited"
    assert events[0]["data"]["rate_limited"] >= 3
    assert usage["current_hour"] == {"allowed": 1, "refused": 10, "rate_limited": 5}


def test_endpoint_templates() -> None:
    assert endpoint_template("get", "/v1/contacts/42?page=2") == "GET /v1/contacts/{id}"
    assert (
        endpoint_template("DELETE", "/v1/deals/0b9c6f5e-8d7a-4b3c-9e2f-1a0b9c8d7e6f/notes/7")
        == "DELETE /v1/deals/{id}/notes/{id}"
    )
    assert endpoint_template("GET", "/v1/users/me") == "GET /v1/users/me"
    assert endpoint_template("GET", "/v1/objects/cus_4eC39HqLyjWDarjt") == "GET /v1/objects/{id}"
    assert endpoint_template("GET", "") == "GET /"


async def test_last_used_at_follows_the_latest_use_and_never_goes_back(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    tenant = await create_tenant(session)
    key = (await session.scalars(select(ApiKey).where(ApiKey.user_id == tenant.owner.id))).one()
    moments = [
        datetime(2026, 11, 21, 10, 30, 5, 900_000, tzinfo=UTC),
        datetime(2026, 11, 21, 10, 45, tzinfo=UTC),
        datetime(2026, 11, 21, 10, 40, tzinfo=UTC),  # another instance's older news
    ]
    now = moments[0]
    recorder = UsageRecorder(sessionmaker, max_endpoints=5, clock=lambda: now)
    seen = []
    for now in moments:  # noqa: B007 (the recorder's clock reads it)
        recorder.record(key.id, tenant.account.id, "GET /x", allowed=True)
        assert await recorder.flush() == 1
        await session.refresh(key)
        seen.append(key.last_used_at)
    # To the second, never after the use.
    assert seen == [datetime(2026, 11, 21, 10, 30, 5, tzinfo=UTC)] + 2 * [
        datetime(2026, 11, 21, 10, 45, tzinfo=UTC)
    ]
    counts = (
        await session.scalars(select(UsageCounter.allowed).where(UsageCounter.key_id == key.id))
    ).all()
    assert counts == [3]  # one hour, one endpoint: one row


async def test_last_used_at_is_written_at_most_once_a_minute(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A busy key must not cost its row an update every second: within a minute of what this
    instance wrote, last_used_at is left as it is; its counts are written all the same."""
    tenant = await create_tenant(session)
    key = (await session.scalars(select(ApiKey).where(ApiKey.user_id == tenant.owner.id))).one()
    start = datetime(2026, 11, 21, 10, 30, 5, tzinfo=UTC)
    now = start
    recorder = UsageRecorder(sessionmaker, max_endpoints=5, clock=lambda: now)
    seen = []
    for seconds in (0, 1, 59, 60, 61, 125):
        now = start + timedelta(seconds=seconds)
        recorder.record(key.id, tenant.account.id, "GET /x", allowed=True)
        assert await recorder.flush() == 1
        await session.refresh(key)
        seen.append(key.last_used_at)
    assert seen == [start] * 3 + [start + timedelta(seconds=60)] * 2 + [
        start + timedelta(seconds=125)
    ]
    allowed = await session.scalar(
        select(UsageCounter.allowed).where(UsageCounter.key_id == key.id)
    )
    assert allowed == 6


async def test_a_key_deleted_before_the_flush_loses_only_its_own_counts(
    session: AsyncSession, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    tenant = await create_tenant(session)
    key = (await session.scalars(select(ApiKey).where(ApiKey.user_id == tenant.owner.id))).one()
    recorder = UsageRecorder(sessionmaker, max_endpoints=5)
    gone = uuid.uuid4()
    recorder.record(gone, tenant.account.id, "GET /x", allowed=True)
    recorder.record(key.id, tenant.account.id, "GET /x", allowed=True)
    await recorder.flush()
    rows = (await session.execute(select(UsageCounter.key_id, UsageCounter.allowed))).all()
    assert [tuple(row) for row in rows] == [(key.id, 1)]


async def test_a_flush_larger_than_a_statement_writes_every_row(
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    sql_statements: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond ROWS_PER_STATEMENT rows a flush takes several statements, in key order: every
    counter and every last_used_at still lands."""
    monkeypatch.setattr(recorder_module, "ROWS_PER_STATEMENT", 3)
    tenant = await create_tenant(session)
    keys = await create_personal_keys(session, tenant.owner, 8)
    now = datetime(2026, 11, 21, 10, 30, 5, tzinfo=UTC)
    recorder = UsageRecorder(sessionmaker, max_endpoints=5, clock=lambda: now)
    for key in reversed(keys):
        recorder.record(key.id, tenant.account.id, "GET /x", allowed=True)
    sql_statements.clear()
    assert await recorder.flush() == 8
    assert len([s for s in sql_statements if s.startswith("INSERT INTO usage_counters")]) == 3
    counted = await session.scalars(
        select(UsageCounter.key_id).where(UsageCounter.key_id.in_([k.id for k in keys]))
    )
    assert sorted(counted.all()) == sorted(k.id for k in keys)
    for key in keys:
        await session.refresh(key)
        assert key.last_used_at == now


async def test_the_usage_page_and_verify_report_the_same_quota_left(
    client: httpx.AsyncClient, session: AsyncSession, app: FastAPI
) -> None:
    """One source of truth: the limiter's count, less what this instance leased and has not
    spent; not the usage counters, which lag and can disagree."""
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, monthly_quota=1000)
    created = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    answers = [
        (await client.post("/v1/verify", json={"key": created["key"]})).json() for _ in range(5)
    ]
    # Not flushed: the usage counters have nothing yet, and the page is right all the same.
    usage = (await client.get(f"/v1/keys/{created['id']}/usage", headers=tenant.headers)).json()
    assert answers[-1]["rate_limit"]["quota_remaining"] == 995
    assert usage["limits"]["quota_remaining"] == 995
    assert usage["current_month"]["allowed"] == 0

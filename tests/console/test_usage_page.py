"""The usage page: the counts the usage API gives, drawn and tabled."""

from __future__ import annotations

import functools
import json
import re
import uuid
from datetime import datetime, timedelta
from html import unescape
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consoles import ConsoleUser, SignIn
from factories import Tenant, create_application, create_key, create_tenant
from keyservice.models import UsageCounter, utcnow
from keyservice.usage.recorder import UsageRecorder


def _at(moment: datetime) -> datetime:
    return moment


async def _key_with_usage(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant: Tenant,
    **fields: object,
) -> dict[str, object]:
    """A key with usage this hour and five hours ago, counted as verifications are."""
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"], **fields)
    key_id = uuid.UUID(str(key["id"]))
    now = utcnow()
    for hours_ago, endpoint, allowed, refused, limited in (
        (0, "GET /v1/contacts", 40, 3, 2),
        (0, "POST /v1/deals", 7, 0, 0),
        (5, "GET /v1/contacts", 12, 1, 0),
    ):
        moment = now - timedelta(hours=hours_ago)
        recorder = UsageRecorder(
            sessionmaker, max_endpoints=10, clock=functools.partial(_at, moment)
        )
        for _ in range(allowed):
            recorder.record(key_id, tenant.account.id, endpoint, allowed=True)
        for n in range(refused):
            recorder.record(
                key_id, tenant.account.id, endpoint, allowed=False, rate_limited=n < limited
            )
        await recorder.flush()
    return key


def _chart(page: str) -> dict[str, Any]:
    match = re.search(r'data-series="([^"]+)"', page)
    assert match, "no chart on the page"
    data: dict[str, Any] = json.loads(unescape(match.group(1)))
    return data


async def test_the_account_view_counts_graphs_and_ranks(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_for_console: Tenant,
    owner: ConsoleUser,
) -> None:
    await _key_with_usage(client, session, sessionmaker, tenant_for_console)
    page = await owner.get("/usage")
    assert page.status_code == 200
    text = page.text
    assert "<script>" not in text  # the series is data, not script
    chart = _chart(text)
    assert len(chart["t"]) == 24
    assert sum(chart["allowed"]) == 59
    assert sum(chart["refused"]) == 4
    assert sum(chart["rate_limited"]) == 2
    # This hour: 47 allowed, 3 refused.
    assert ">50<" in text
    # Most called endpoint first.
    assert text.index("GET /v1/contacts") < text.index("POST /v1/deals")
    assert "Production Integration" in text  # the busiest keys


async def test_one_keys_view_by_day_with_its_quota(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_for_console: Tenant,
    owner: ConsoleUser,
) -> None:
    key = await _key_with_usage(
        client, session, sessionmaker, tenant_for_console, monthly_quota=1000
    )
    page = await owner.get(f"/usage?key_id={key['id']}&granularity=day")
    assert page.status_code == 200
    chart = _chart(page.text)
    assert len(chart["t"]) == 30
    assert chart["granularity"] == "day"
    assert "Quota left this month" in page.text
    assert "of 1,000" in page.text
    assert "80%, 100%" in page.text  # the alert thresholds


async def test_an_empty_period_says_how_usage_arrives(owner: ConsoleUser) -> None:
    page = await owner.get("/usage")
    assert "No requests in this period yet" in page.text
    assert 'id="usage-chart"' not in page.text


async def test_a_member_reads_usage(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_for_console: Tenant,
    member: ConsoleUser,
) -> None:
    await _key_with_usage(client, session, sessionmaker, tenant_for_console)
    page = await member.get("/usage")
    assert page.status_code == 200
    assert sum(_chart(page.text)["allowed"]) == 59


async def test_another_accounts_key_usage_is_not_found(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant_for_console: Tenant,
    sign_in: SignIn,
) -> None:
    key = await _key_with_usage(client, session, sessionmaker, tenant_for_console)
    stranger = await sign_in((await create_tenant(session, name="Initech")).owner)
    assert (await stranger.get(f"/usage?key_id={key['id']}")).status_code == 404
    page = await stranger.get("/usage")
    assert "No requests in this period yet" in page.text
    assert (await stranger.get("/usage?granularity=minute")).status_code == 404


async def test_console_pages_are_not_the_products_api_usage(
    app: FastAPI, owner: ConsoleUser, session: AsyncSession
) -> None:
    for path in ("/applications", "/keys", "/usage"):
        assert (await owner.get(path)).status_code == 200
    await app.state.verifier.usage.flush()
    counted = (await session.scalars(select(UsageCounter.endpoint))).all()
    assert not [endpoint for endpoint in counted if "/console" in endpoint]


async def test_the_whole_account_choice_is_the_account_view(owner: ConsoleUser) -> None:
    page = await owner.get("/usage?granularity=day&key_id=")
    assert page.status_code == 200
    assert "Busiest keys" in page.text


async def test_the_alert_thresholds_in_force_are_shown(
    client: httpx.AsyncClient, tenant_for_console: Tenant, owner: ConsoleUser
) -> None:
    headers = tenant_for_console.headers
    response = await client.patch(
        "/v1/account",
        json={"alert_quota_percents": [50, 90], "alert_rate_limited_refusals": 20},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    application = await create_application(client, tenant_for_console)
    own = await create_key(client, tenant_for_console, application["id"], alert_quota_percents=[75])
    inherits = await create_key(client, tenant_for_console, application["id"], name="Other")
    account_page = await owner.get("/usage")
    assert "reaches 50%, 90% of its monthly quota" in account_page.text
    assert "20 times within an hour" in account_page.text
    own_page = await owner.get(f"/usage?key_id={own['id']}")
    assert "reaches 75% of its monthly quota" in own_page.text
    assert "20 times within an hour" in own_page.text
    inherited = await owner.get(f"/usage?key_id={inherits['id']}")
    assert "reaches 50%, 90% of its monthly quota" in inherited.text

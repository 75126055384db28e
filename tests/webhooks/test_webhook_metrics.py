"""Webhook metrics: attempts by outcome, and how overdue the most overdue message is; no label
names an endpoint or an account."""

from __future__ import annotations

import re

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import Clock
from factories import create_application, create_tenant
from keyservice.webhooks.delivery import Delivery
from metrics_text import UUID, _samples, _value
from receivers import Answer, Receiver, endpoint_for


async def test_deliveries_are_counted_by_outcome_and_the_backlog_is_measured(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    await endpoint_for(client, tenant, receiver)
    before = _samples((await client.get("/metrics")).text)
    receiver.answers.extend([Answer(500), Answer(200)])
    await create_application(client, tenant)
    await delivery.run_once()
    assert await delivery.sample_backlog() == 0  # the retry is not due yet
    clock.advance(65)
    assert await delivery.sample_backlog() >= 60  # due for a minute, not delivered
    await delivery.run_once()
    assert await delivery.sample_backlog() == 0

    text = (await client.get("/metrics")).text
    after = _samples(text)
    name = "keyservice_webhook_deliveries_total"
    for outcome, grown in (("retry", 1), ("delivered", 1), ("failed", 0), ("gone", 0)):
        assert _value(after, name, outcome=outcome) - _value(before, name, outcome=outcome) == (
            grown
        ), outcome
    assert re.search(r"^keyservice_webhook_oldest_pending_seconds 0\.0$", text, re.MULTILINE)
    assert not UUID.search(text)

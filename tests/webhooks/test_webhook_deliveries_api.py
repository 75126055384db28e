"""Every attempt is visible: an endpoint's messages with their attempts, filtered and paged;
one message redelivered, every failed message since a time replayed; and the tester, which
sends a sample event now and shows exactly what it sent."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import Clock
from factories import (
    Tenant,
    auth,
    create_application,
    create_personal_key,
    create_tenant,
    create_user,
)
from keyservice.models import Role, utcnow
from keyservice.webhooks.delivery import Delivery
from receivers import Answer, Receiver, endpoint_for
from servers import free_port

PATH = "/v1/webhooks/endpoints"


async def _deliveries(
    client: httpx.AsyncClient, tenant: Tenant, endpoint_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"{PATH}/{endpoint_id}/deliveries", headers=tenant.headers, params=params
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_each_message_shows_its_attempts_filtered_and_paged(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    receiver.answers.extend([Answer(503, body=b"try later"), Answer(200, body=b"thanks")])
    application = await create_application(client, tenant)
    await delivery.run_once()
    clock.advance(5)
    await delivery.run_once()
    await client.delete(f"/v1/applications/{application['id']}", headers=tenant.headers)
    await delivery.run_once()

    page = await _deliveries(client, tenant, created["id"])
    deleted, first = page["data"]
    assert (first["event_type"], first["status"]) == ("application.created", "delivered")
    assert first["id"] == receiver.received[0].id
    failed, succeeded = first["attempts"]
    assert (failed["status_code"], failed["success"], failed["response_excerpt"]) == (
        503,
        False,
        "try later",
    )
    assert (succeeded["status_code"], succeeded["success"]) == (200, True)
    assert succeeded["response_excerpt"] == "thanks"
    assert failed["error"] is succeeded["error"] is None
    assert failed["latency_ms"] >= 0
    assert deleted["event_type"] == "application.deleted"

    only = await _deliveries(client, tenant, created["id"], event_type="application.deleted")
    assert [m["id"] for m in only["data"]] == [deleted["id"]]
    assert (await _deliveries(client, tenant, created["id"], status="failed"))["data"] == []
    one = await _deliveries(client, tenant, created["id"], limit=1)
    assert [m["id"] for m in one["data"]] == [deleted["id"]]
    rest = await _deliveries(client, tenant, created["id"], limit=1, cursor=one["next_cursor"])
    assert [m["id"] for m in rest["data"]] == [first["id"]]
    assert rest["next_cursor"] is None


async def test_an_unreachable_endpoint_says_why_in_its_attempts(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery
) -> None:
    tenant = await create_tenant(session)
    from factories import create_endpoint

    created = await create_endpoint(client, tenant, f"http://127.0.0.1:{free_port()}/hooks")
    await create_application(client, tenant)
    await delivery.run_once()
    [message] = (await _deliveries(client, tenant, created["id"]))["data"]
    [attempt] = message["attempts"]
    assert (attempt["status_code"], attempt["error"]) == (None, "refused")
    assert message["status"] == "pending"
    assert message["next_attempt_at"] is not None


async def test_a_failed_message_is_redelivered_and_failures_are_replayed(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    clock: Clock,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(500)
    before = utcnow()
    for name in ("One", "Two", "Three"):
        await create_application(client, tenant, name=name)
    for _ in range(6):  # every attempt of the schedule fails
        await delivery.run_once()
        clock.advance(24 * 3600)
    assert len(receiver.received) == 18
    failed = (await _deliveries(client, tenant, created["id"], status="failed"))["data"]
    assert len(failed) == 3

    receiver.default = Answer(200)
    response = await client.post(
        f"{PATH}/{created['id']}/deliveries/{failed[0]['id']}/redeliver", headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    assert len(response.json()["attempts"]) == 6
    assert await delivery.run_once() == 1
    assert receiver.received[-1].id == failed[0]["id"]  # the same webhook-id

    response = await client.post(
        f"{PATH}/{created['id']}/replay",
        headers=tenant.headers,
        json={"since": (before + timedelta(days=1)).isoformat()},
    )
    assert response.json() == {"replayed": 0}
    response = await client.post(
        f"{PATH}/{created['id']}/replay", headers=tenant.headers, json={"since": before.isoformat()}
    )
    assert response.json() == {"replayed": 2}
    assert await delivery.run_once() == 2
    assert {r.id for r in receiver.received[-2:]} == {m["id"] for m in failed[1:]}
    assert (await _deliveries(client, tenant, created["id"], status="failed"))["data"] == []


async def test_the_tester_sends_a_sample_and_shows_exactly_what_it_sent(
    client: httpx.AsyncClient, session: AsyncSession, receiver: Receiver
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(202, body=b"accepted")
    response = await client.post(
        f"{PATH}/{created['id']}/test", headers=tenant.headers, json={"event_type": "key.created"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["status_code"], result["success"], result["response_excerpt"]) == (
        202,
        True,
        "accepted",
    )
    [received] = receiver.received
    assert received.verified_by == [created["secret"]]
    assert result["request"]["body"].encode() == received.body
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type"):
        assert result["request"]["headers"][name] == received.headers[name]
    sample = json.loads(result["request"]["body"])
    [key_created] = [
        t
        for t in (await client.get("/v1/event-types", headers=tenant.headers)).json()["data"]
        if t["type"] == "key.created"
    ]
    assert sample["type"] == "key.created"
    assert sample["data"] == key_created["data_example"]
    # Nothing recorded: the sample is no message of the endpoint.
    assert (await _deliveries(client, tenant, created["id"]))["data"] == []

    response = await client.post(
        f"{PATH}/{created['id']}/test", headers=tenant.headers, json={"event_type": "no.such"}
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:keyservice:problem:unknown-event-type"


async def test_the_tester_says_why_nothing_answered(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    from factories import create_endpoint

    created = await create_endpoint(client, tenant, f"http://127.0.0.1:{free_port()}/hooks")
    response = await client.post(
        f"{PATH}/{created['id']}/test", headers=tenant.headers, json={"event_type": "key.revoked"}
    )
    result = response.json()
    assert (result["status_code"], result["error"], result["success"]) == (None, "refused", False)


async def test_deliveries_are_the_accounts_own_and_members_only_read_them(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
) -> None:
    victim = await create_tenant(session, "Victim")
    intruder = await create_tenant(session, "Intruder")
    created = await endpoint_for(client, victim, receiver)
    await create_application(client, victim)
    await delivery.run_once()
    [message] = (await _deliveries(client, victim, created["id"]))["data"]
    path = f"{PATH}/{created['id']}"
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"{path}/deliveries", None),
        ("POST", f"{path}/deliveries/{message['id']}/redeliver", None),
        ("POST", f"{path}/replay", {"since": "2020-01-01T00:00:00Z"}),
        ("POST", f"{path}/test", {"event_type": "key.created"}),
    ]
    for method, target, body in calls:
        response = await client.request(method, target, json=body, headers=intruder.headers)
        assert response.status_code == 404, (method, target, response.text)
    # A message is found only under its own endpoint.
    other = await endpoint_for(client, victim, receiver)
    response = await client.post(
        f"{PATH}/{other['id']}/deliveries/{message['id']}/redeliver", headers=victim.headers
    )
    assert response.status_code == 404

    member = await create_user(session, accounts={victim.account.id: Role.member})
    key = await create_personal_key(session, member, scopes=["keyservice:*"])
    assert (await client.get(f"{path}/deliveries", headers=auth(key))).status_code == 200
    for method, target, body in calls[1:]:
        response = await client.request(method, target, json=body, headers=auth(key))
        assert response.status_code == 403, (method, target, response.text)
    assert len(receiver.received) == 1

"""The product's own events: declared by the deployment, published by its backend with
``POST /v1/events``, checked against their schemas, idempotent, and delivered like
keyservice's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import Tenant, auth, create_application, create_key, create_tenant
from keyservice.config import Settings
from keyservice.events.product import CatalogueError, ProductCatalogue
from keyservice.webhooks.delivery import Delivery
from receivers import Receiver, endpoint_for

CONTACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["contact_id", "email"],
    "properties": {
        "contact_id": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "examples": [{"contact_id": "c_1", "email": "ada@example.com"}],
}


async def _publisher(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """The headers of the product backend's key: an application key that may publish."""
    application = await create_application(
        client, tenant, permissions=["keyservice:events:publish", "contacts:read"]
    )
    key = await create_key(client, tenant, application["id"], scopes=["keyservice:events:publish"])
    return auth(key["key"])


async def _publish(
    client: httpx.AsyncClient, headers: dict[str, str], **body: Any
) -> httpx.Response:
    return await client.post("/v1/events", headers=headers, json=body)


async def test_a_published_event_is_recorded_and_delivered_once_per_idempotency_key(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery, receiver: Receiver
) -> None:
    tenant = await create_tenant(session)
    await endpoint_for(client, tenant, receiver, event_types=["deal.won"])
    headers = await _publisher(client, tenant)
    await delivery.run_once()  # the application and key events go elsewhere: nowhere

    body = {"type": "deal.won", "data": {"deal_id": "d_9", "amount": 1200}, "idempotency_key": "k1"}
    first = await _publish(client, headers, **body)
    assert first.status_code == 201, first.text
    event = first.json()
    assert (event["type"], event["data"]) == ("deal.won", {"deal_id": "d_9", "amount": 1200})
    again = await _publish(client, headers, **body | {"data": {"deal_id": "other"}})
    assert again.status_code == 200
    assert again.json() == event

    listed = await client.get("/v1/events", headers=tenant.headers, params={"type": "deal.won"})
    assert [e["id"] for e in listed.json()["data"]] == [event["id"]]
    assert await delivery.run_once() == 1
    [received] = receiver.received
    assert received.verified_by
    assert received.payload["type"] == "deal.won"
    assert received.payload["data"] == {"deal_id": "d_9", "amount": 1200}
    assert await delivery.run_once() == 0

    # Without a key, each publish is an event of its own.
    for _ in range(2):
        response = await _publish(client, headers, type="deal.won", data={"deal_id": "d_10"})
        assert response.status_code == 201
    assert await delivery.run_once() == 2


async def test_an_unknown_type_or_oversized_data_is_refused_naming_the_field(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    headers = await _publisher(client, tenant)
    for event_type in ("contact.deleted", "key.created"):
        response = await _publish(client, headers, type=event_type, data={})
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "urn:keyservice:problem:unknown-event-type"
        assert response.json()["field"] == "type"
    response = await _publish(client, headers, type="contact.created", data={"notes": "x" * 20_000})
    assert response.status_code == 422
    assert response.json()["type"] == "urn:keyservice:problem:invalid-event-data"
    assert response.json()["field"] == "data"
    events = await client.get("/v1/events", headers=tenant.headers)
    assert not [e for e in events.json()["data"] if e["type"].startswith("contact.")]


async def test_data_that_its_schema_refuses_is_422_naming_the_field(
    make_app: Any, session: AsyncSession, tmp_path: Path
) -> None:
    schema = tmp_path / "contact.json"
    schema.write_text(json.dumps(CONTACT_SCHEMA))
    app: FastAPI = make_app(event_types=(f"contact.created={schema}", "deal.won"))
    tenant = await create_tenant(session)
    async with client_for(app) as client:
        headers = await _publisher(client, tenant)
        response = await _publish(
            client,
            headers,
            type="contact.created",
            data={"contact_id": "c_1", "email": "ada@example.com", "tags": ["vip", 7]},
        )
        assert response.status_code == 422
        assert response.json()["field"] == "data.tags.1"
        response = await _publish(client, headers, type="contact.created", data={"email": "a@b"})
        assert response.status_code == 422
        assert response.json()["field"] == "data"
        assert "contact_id" in response.json()["detail"]
        response = await _publish(
            client, headers, type="contact.created", data=CONTACT_SCHEMA["examples"][0]
        )
        assert response.status_code == 201, response.text

        # The catalogue shows the product's types with their schemas, and endpoints take them.
        listed = (await client.get("/v1/event-types", headers=tenant.headers)).json()["data"]
        contact = next(t for t in listed if t["type"] == "contact.created")
        assert contact["data_schema"] == CONTACT_SCHEMA
        assert contact["data_example"] == CONTACT_SCHEMA["examples"][0]
        deal = next(t for t in listed if t["type"] == "deal.won")
        assert deal["data_schema"] == {"type": "object"}
        response = await client.post(
            "/v1/webhooks/endpoints",
            headers=tenant.headers,
            json={"url": "https://hooks.example/x", "event_types": ["contact.created"]},
        )
        assert response.status_code == 201, response.text
        response = await client.post(
            "/v1/webhooks/endpoints",
            headers=tenant.headers,
            json={"url": "https://hooks.example/x", "event_types": ["automation.triggered"]},
        )
        assert response.status_code == 422  # not declared by this deployment


async def test_publishing_takes_its_own_scope(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    reader = await create_key(client, tenant, application["id"], scopes=["contacts:read"])
    response = await _publish(client, auth(reader["key"]), type="deal.won", data={})
    assert response.status_code == 403
    assert response.json()["scope"] == "keyservice:events:publish"


def test_the_deployment_declares_its_event_types(tmp_path: Path) -> None:
    assert Settings(_env_file=None).event_types == (
        "contact.created",
        "deal.won",
        "automation.triggered",
    )
    for bad in ("contact", "Contact.Created", "key.expired", "webhook.custom", "a.b,a.b"):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, event_types=bad)
    with pytest.raises(CatalogueError, match="cannot be read"):
        ProductCatalogue.load([f"contact.created={tmp_path / 'missing.json'}"])
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(CatalogueError, match="not a valid JSON Schema"):
        ProductCatalogue.load([f"contact.created={invalid}"])

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from keyservice.config import SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import (
    InsufficientRole,
    InsufficientScope,
    InvalidEventData,
    UnknownEventType,
    responses,
)
from keyservice.events import service
from keyservice.events.product import ProductCatalogueDep
from keyservice.events.schemas import EventOut, EventPublish, EventTypeOut, EventTypes
from keyservice.pagination import Page, PageDep
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter()

EventReader = Annotated[Principal, Depends(require("keyservice:usage:read"))]
EventPublisher = Annotated[Principal, Depends(require("keyservice:events:publish"))]
AnyKey = Annotated[Principal, Depends(require())]
# No scope is asked for, so none can be missing.
ANY_KEY_ERRORS = tuple(e for e in AUTH_ERRORS if e not in (InsufficientScope, InsufficientRole))


# Listed under usage too, where its first events (the alerts) were.
@router.get("/v1/events", tags=["usage", "events"], responses=responses(*AUTH_ERRORS))
async def list_events(
    session: SessionDep,
    actor: EventReader,
    page: PageDep,
    type: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z_.]+$", examples=["usage.threshold"])
    ] = None,
    key_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Page[EventOut]:
    """The account's events, newest first: its keys created, updated, rotated, revoked,
    expiring (7 days and 1 day before by default) and expired (a
    user's personal key in each account the user has joined), its applications created, updated
    and deleted, its members added (at once, or when they accept an invitation), updated and
    removed, and `usage.threshold` when a key crosses 80% and 100% of its monthly quota, or
    keeps being refused within an hour (once per threshold and period), and
    `webhook.endpoint.disabled` when keyservice disables a webhook endpoint; and the product's
    own events, published with `POST /v1/events`. Each is recorded with the change that caused
    it, never without it; webhooks deliver from this list.

    An event shows what it is about, so a key sees only the events it could read otherwise:
    `key.*` take `keyservice:keys:read`, `application.*` `keyservice:applications:read` and
    `member.*` `keyservice:members:read` and `webhook.*` `keyservice:webhooks:read`, besides
    `keyservice:usage:read`."""
    events, next_cursor = await service.list_events(
        session, actor, page=page, type_=type, key_id=key_id
    )
    return Page(data=[EventOut.model_validate(e) for e in events], next_cursor=next_cursor)


@router.get("/v1/event-types", tags=["events"], responses=responses(*ANY_KEY_ERRORS))
async def list_event_types(actor: AnyKey, product: ProductCatalogueDep) -> EventTypes:
    """The catalogue of event types: for each, what it means, the scope that shows it in `GET
    /v1/events`, the JSON Schema of its `data` and an example. Payloads carry ids and the
    fields that changed, never a secret; they may gain fields, never lose any.

    Any valid key of the account reads it, whatever its scopes: the catalogue tells nothing of
    the account, only of keyservice, and whoever writes the code that consumes events needs
    it."""
    return EventTypes(
        data=[
            *(EventTypeOut.of(t) for t in service.event_types()),
            *(EventTypeOut.of_product(t) for t in product.types),
        ]
    )


@router.post(
    "/v1/events",
    tags=["events"],
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": EventOut,
            "description": "A repeat of an `idempotency_key`: the first event, delivered once.",
        },
        **responses(*AUTH_ERRORS, UnknownEventType, InvalidEventData),
    },
)
async def publish_event(
    session: SessionDep,
    settings: SettingsDep,
    actor: EventPublisher,
    product: ProductCatalogueDep,
    response: Response,
    body: EventPublish,
) -> EventOut:
    """Publish one of the product's own events (`KEYSERVICE_EVENT_TYPES`: `contact.created`,
    `deal.won`, ...) from its backend: it is recorded in the account's events and delivered to
    every webhook endpoint subscribed to its type. Takes `keyservice:events:publish`.

    With an `idempotency_key`, publishing again (a retry after a timeout, say) answers 200 with
    the first event and delivers nothing more. An unknown type, data over the size limit, or
    data that its type's schema refuses is a 422 naming the field."""
    event, created = await service.publish(
        session,
        actor,
        product=product,
        type_=body.type,
        data=body.data,
        idempotency_key=body.idempotency_key,
        max_data_bytes=settings.event_max_data_bytes,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return EventOut.model_validate(event)

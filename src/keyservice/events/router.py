from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keyservice.db import SessionDep
from keyservice.errors import InsufficientRole, InsufficientScope, responses
from keyservice.events import service
from keyservice.events.schemas import EventOut, EventTypeOut, EventTypes
from keyservice.pagination import Page, PageDep
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter()

EventReader = Annotated[Principal, Depends(require("keyservice:usage:read"))]
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
    """The account's events, newest first: its keys created, updated, rotated and revoked (a
    user's personal key in each account the user has joined), its applications created, updated
    and deleted, its members added (at once, or when they accept an invitation), updated and
    removed, and `usage.threshold` when a key crosses 80% and 100% of its monthly quota, or
    keeps being refused within an hour (once per threshold and period), and
    `webhook.endpoint.disabled` when keyservice disables a webhook endpoint. Each is recorded
    with the change that caused it, never without it; webhooks deliver from this list.

    An event shows what it is about, so a key sees only the events it could read otherwise:
    `key.*` take `keyservice:keys:read`, `application.*` `keyservice:applications:read` and
    `member.*` `keyservice:members:read` and `webhook.*` `keyservice:webhooks:read`, besides
    `keyservice:usage:read`."""
    events, next_cursor = await service.list_events(
        session, actor, page=page, type_=type, key_id=key_id
    )
    return Page(data=[EventOut.model_validate(e) for e in events], next_cursor=next_cursor)


@router.get("/v1/event-types", tags=["events"], responses=responses(*ANY_KEY_ERRORS))
async def list_event_types(actor: AnyKey) -> EventTypes:
    """The catalogue of event types: for each, what it means, the scope that shows it in `GET
    /v1/events`, the JSON Schema of its `data` and an example. Payloads carry ids and the
    fields that changed, never a secret; they may gain fields, never lose any.

    Any valid key of the account reads it, whatever its scopes: the catalogue tells nothing of
    the account, only of keyservice, and whoever writes the code that consumes events needs
    it."""
    return EventTypes(data=[EventTypeOut.of(t) for t in service.event_types()])

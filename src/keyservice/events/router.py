from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keyservice.db import SessionDep
from keyservice.errors import responses
from keyservice.events import service
from keyservice.events.schemas import EventOut
from keyservice.pagination import Page, PageDep
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

# Listed under usage too, where its first events (the alerts) were.
router = APIRouter(tags=["usage", "events"])

EventReader = Annotated[Principal, Depends(require("keyservice:usage:read"))]


@router.get("/v1/events", responses=responses(*AUTH_ERRORS))
async def list_events(
    session: SessionDep,
    actor: EventReader,
    page: PageDep,
    type: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z_.]+$", examples=["usage.threshold"])
    ] = None,
    key_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Page[EventOut]:
    """The account's events, newest first: `usage.threshold` when a key crosses 80% and 100% of
    its monthly quota, or keeps being refused within an hour. Each is recorded once per
    threshold and period; webhooks deliver from this list."""
    events, next_cursor = await service.list_events(
        session, account_id=actor.account_id, page=page, type_=type, key_id=key_id
    )
    return Page(data=[EventOut.model_validate(e) for e in events], next_cursor=next_cursor)

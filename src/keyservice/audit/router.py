from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from keyservice.audit import service
from keyservice.audit.schemas import AuditEventOut
from keyservice.db import SessionDep
from keyservice.errors import responses
from keyservice.pagination import Page, PageDep
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter(prefix="/v1/audit-events", tags=["audit"])

AuditReader = Annotated[Principal, Depends(require("keyservice:audit:read"))]


@router.get("", responses=responses(*AUTH_ERRORS))
async def list_audit_events(
    session: SessionDep,
    actor: AuditReader,
    page: PageDep,
    action: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z_.]+$", examples=["key.revoked"])
    ] = None,
) -> Page[AuditEventOut]:
    """The account's audit trail, newest first: who changed what, when, and from which address."""
    events, next_cursor = await service.list_events(
        session, account_id=actor.account_id, page=page, action=action
    )
    return Page(data=[AuditEventOut.model_validate(e) for e in events], next_cursor=next_cursor)

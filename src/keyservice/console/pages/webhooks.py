"""Webhooks: endpoints and their events, the signing secret shown once, a test event and its
attempt, the delivery log, redelivery and replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from keyservice.config import SettingsDep
from keyservice.console import web
from keyservice.db import SessionDep
from keyservice.errors import KeyServiceError, ValidationFailed
from keyservice.events import service as events
from keyservice.events.product import ProductCatalogue
from keyservice.pagination import DEFAULT_PAGE_SIZE, PageParams
from keyservice.secretbox import SecretBox
from keyservice.webhooks import service
from keyservice.webhooks.schemas import EndpointCreate, EndpointUpdate, TestEvent
from keyservice.webhooks.ssrf import Policy

router = APIRouter(prefix="/webhooks")

Reader = Annotated[web.Visitor, Depends(web.requires("keyservice:webhooks:read"))]
Writer = Annotated[web.Visitor, Depends(web.requires("keyservice:webhooks:write"))]
WRITE = "keyservice:webhooks:write"


def _product(request: Request) -> ProductCatalogue:
    product: ProductCatalogue = request.app.state.product_events
    return product


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.keyring.box()
    return box


def _policy(request: Request) -> Policy:
    policy: Policy = request.app.state.ssrf_policy
    return policy


def event_groups(request: Request) -> list[tuple[str, list[str]]]:
    """The deployment's event types as the form's checkbox groups."""
    own = [t.name for t in events.event_types()]
    return [
        ("keyservice", own),
        ("Your product", sorted(_product(request).names())),
    ]


async def _fields(request: Request) -> dict[str, Any]:
    form = await request.form()
    return {
        "url": str(form.get("url", "")).strip(),
        "description": str(form.get("description", "")),
        "event_types": [str(t) for t in form.getlist("event_types")],
    }


def _form_page(
    request: Request,
    visitor: web.Visitor,
    *,
    values: dict[str, Any],
    endpoint: Any = None,
    problem: web.Problem | None = None,
) -> Response:
    return web.render(
        request,
        "webhooks/form.html",
        visitor,
        status_code=problem.status if problem else 200,
        endpoint=endpoint,
        values=values,
        groups=event_groups(request),
        problem=problem,
    )


@router.get("")
async def list_endpoints(
    request: Request,
    session: SessionDep,
    visitor: Reader,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    endpoints, next_cursor = await service.list_endpoints(
        session,
        account_id=visitor.account_id,
        page=PageParams(limit=DEFAULT_PAGE_SIZE, cursor=cursor),
    )
    return web.render(
        request,
        "webhooks/list.html",
        visitor,
        endpoints=endpoints,
        next_cursor=next_cursor,
        can_write=visitor.can(WRITE),
    )


@router.get("/new")
async def new_endpoint(request: Request, visitor: Writer) -> Response:
    values = {"url": "", "description": "", "event_types": []}
    return _form_page(request, visitor, values=values)


@router.post("")
async def create_endpoint(request: Request, session: SessionDep, visitor: Writer) -> Response:
    values = await _fields(request)
    try:
        body = EndpointCreate(**values)
        endpoint, secret = await service.create_endpoint(
            session,
            visitor.principal,
            body,
            box=_box(request),
            policy=_policy(request),
            known_types=events.known_types(_product(request)),
        )
    except ValidationError as error:
        return _form_page(request, visitor, values=values, problem=web.Problem.of_validation(error))
    except KeyServiceError as error:
        problem = _field_problem(error)
        return await web.undone(
            session, _form_page(request, visitor, values=values, problem=problem)
        )
    return web.render(
        request, "webhooks/secret.html", visitor, endpoint=endpoint, secret=secret, rotated=False
    )


def _field_problem(error: KeyServiceError) -> web.Problem:
    problem = web.Problem.of(error)
    if not problem.fields:
        # The API's problem names the field in its type: the URL's or the event types'.
        field = "url" if "url" in error.slug else "event_types" if "event" in error.slug else None
        if field:
            problem.fields[field] = error.detail
    return problem


@router.get("/{endpoint_id}")
async def show_endpoint(
    request: Request,
    session: SessionDep,
    visitor: Reader,
    endpoint_id: uuid.UUID,
    saved: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    return web.render(
        request,
        "webhooks/show.html",
        visitor,
        endpoint=endpoint,
        saved=saved,
        types=[name for _, names in event_groups(request) for name in names],
        can_write=visitor.can(WRITE),
    )


@router.get("/{endpoint_id}/edit")
async def edit_endpoint(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    values = {
        "url": endpoint.url,
        "description": endpoint.description,
        "event_types": endpoint.event_types,
    }
    return _form_page(request, visitor, values=values, endpoint=endpoint)


@router.post("/{endpoint_id}")
async def update_endpoint(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    values = await _fields(request)
    try:
        body = EndpointUpdate(**values)
        await service.update_endpoint(
            session,
            visitor.principal,
            endpoint_id,
            body,
            policy=_policy(request),
            known_types=events.known_types(_product(request)),
        )
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except KeyServiceError as error:
        problem = _field_problem(error)
    else:
        return web.redirect(request, f"/webhooks/{endpoint_id}?saved=updated")
    return await web.undone(
        session, _form_page(request, visitor, values=values, endpoint=endpoint, problem=problem)
    )


@router.post("/{endpoint_id}/enable")
async def enable(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    await service.set_enabled(session, visitor.principal, endpoint_id, enabled=True)
    return web.redirect(request, f"/webhooks/{endpoint_id}?saved=enabled")


@router.post("/{endpoint_id}/disable")
async def disable(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    await service.set_enabled(session, visitor.principal, endpoint_id, enabled=False)
    return web.redirect(request, f"/webhooks/{endpoint_id}?saved=disabled")


@router.get("/{endpoint_id}/rotate-secret")
async def confirm_rotate(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Writer,
    endpoint_id: uuid.UUID,
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    hours = settings.webhook_secret_grace_seconds / 3600
    return web.render(
        request,
        "confirm.html",
        visitor,
        section="webhooks",
        title="Rotate the signing secret?",
        consequences=[
            "A new secret signs every delivery from now on; it is shown once, on the next page.",
            f"The current secret keeps signing beside it for {hours:g} hours (both signatures "
            "are in the webhook-signature header); after that, a receiver that still verifies "
            "with it refuses every delivery.",
        ],
        action=f"/webhooks/{endpoint.id}/rotate-secret",
        button="Rotate secret",
        cancel=f"/webhooks/{endpoint.id}",
    )


@router.post("/{endpoint_id}/rotate-secret")
async def rotate_secret(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Writer,
    endpoint_id: uuid.UUID,
) -> Response:
    endpoint, secret = await service.rotate_secret(
        session,
        visitor.principal,
        endpoint_id,
        grace_seconds=settings.webhook_secret_grace_seconds,
        box=_box(request),
    )
    return web.render(
        request, "webhooks/secret.html", visitor, endpoint=endpoint, secret=secret, rotated=True
    )


@router.get("/{endpoint_id}/delete")
async def confirm_delete(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    return web.render(
        request,
        "confirm.html",
        visitor,
        section="webhooks",
        title="Delete this endpoint?",
        consequences=[
            f"Nothing more is sent to {endpoint.url}; messages waiting for it are dropped.",
            "Its delivery history goes with it. This cannot be undone.",
        ],
        action=f"/webhooks/{endpoint.id}/delete",
        button="Delete endpoint",
        cancel=f"/webhooks/{endpoint.id}",
    )


@router.post("/{endpoint_id}/delete")
async def delete_endpoint(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    await service.delete_endpoint(session, visitor.principal, endpoint_id)
    return web.redirect(request, "/webhooks")


@router.post("/{endpoint_id}/test")
async def send_test(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    """Sends a sample event now and shows the attempt; with htmx, only the result is swapped."""
    form = await request.form()
    sent: Any = None
    outcome: Any = None
    problem: web.Problem | None = None
    try:
        body = TestEvent(event_type=str(form.get("event_type", "")))
        sent, outcome = await service.test_endpoint(
            session,
            visitor.principal,
            endpoint_id=endpoint_id,
            event_type=body.event_type,
            box=_box(request),
            policy=_policy(request),
            client=request.app.state.runtime.delivery.http(),
            product=_product(request),
        )
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except ValidationFailed as error:
        problem = web.Problem.of(error)
    partial = request.headers.get("HX-Request")
    template = "webhooks/_test_result.html" if partial else "webhooks/test.html"
    return web.render(
        request,
        template,
        visitor,
        status_code=problem.status if problem else 200,
        endpoint_id=endpoint_id,
        sent=sent,
        body=sent.body.decode() if sent else "",
        outcome=outcome,
        problem=problem,
    )


STATUSES = ("pending", "delivered", "failed")


@router.get("/{endpoint_id}/deliveries")
async def deliveries(
    request: Request,
    session: SessionDep,
    visitor: Reader,
    endpoint_id: uuid.UUID,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, web.Blank, Query()] = None,
    event_type: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_.]*$")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    saved: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    messages, next_cursor = await service.list_deliveries(
        session,
        account_id=visitor.account_id,
        endpoint_id=endpoint_id,
        page=PageParams(limit=DEFAULT_PAGE_SIZE, cursor=cursor),
        status=status,
        event_type=event_type or None,
    )
    return web.render(
        request,
        "webhooks/deliveries.html",
        visitor,
        endpoint=endpoint,
        messages=messages,
        next_cursor=next_cursor,
        filters={"status": status or "", "event_type": event_type or ""},
        statuses=STATUSES,
        types=[name for _, names in event_groups(request) for name in names],
        saved=saved,
        can_write=visitor.can(WRITE),
    )


@router.post("/{endpoint_id}/deliveries/{message_id}/redeliver")
async def redeliver(
    request: Request,
    session: SessionDep,
    visitor: Writer,
    endpoint_id: uuid.UUID,
    message_id: uuid.UUID,
) -> Response:
    await service.redeliver(
        session, visitor.principal, endpoint_id=endpoint_id, message_id=message_id
    )
    return web.redirect(request, f"/webhooks/{endpoint_id}/deliveries?saved=redelivered")


@router.post("/{endpoint_id}/replay")
async def replay(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    """Every failed message since a moment of the browser's clock (its offset from UTC comes
    with the form)."""
    form = await request.form()
    try:
        local = datetime.fromisoformat(str(form.get("since", "")))
        offset = max(-900, min(900, int(str(form.get("tz_offset", "0")) or 0)))
        since = local.replace(tzinfo=UTC) + timedelta(minutes=offset)
    except ValueError:
        raise ValidationFailed("Choose when the failures began") from None
    replayed = await service.replay(
        session, visitor.principal, endpoint_id=endpoint_id, since=since
    )
    return web.redirect(request, f"/webhooks/{endpoint_id}/deliveries?saved=replayed-{replayed}")

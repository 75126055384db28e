"""Webhooks: endpoints and their events, the signing secret shown once, a test event and its
attempt, the delivery log, redelivery and replay."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.config import Settings, SettingsDep
from keyservice.console import web
from keyservice.db import SessionDep
from keyservice.errors import KeyServiceError
from keyservice.events import service as events
from keyservice.events.product import ProductCatalogue
from keyservice.models import WebhookEndpoint
from keyservice.pagination import DEFAULT_PAGE_SIZE, PageParams
from keyservice.secretbox import SecretBox
from keyservice.webhooks import service
from keyservice.webhooks.schemas import EndpointCreate, EndpointUpdate, Replay, TestEvent
from keyservice.webhooks.ssrf import Policy

router = APIRouter(prefix="/webhooks")

Reader = Annotated[web.Visitor, Depends(web.requires("keyservice:webhooks:read"))]
Writer = Annotated[web.Visitor, Depends(web.requires("keyservice:webhooks:write"))]
WRITE = "keyservice:webhooks:write"

STATUSES = ("pending", "delivered", "failed")
# The API's filter, digits included: a product's event types may have them.
EVENT_TYPE_FILTER = r"^[a-z0-9_.]*$"


def _product(request: Request) -> ProductCatalogue:
    product: ProductCatalogue = request.app.state.product_events
    return product


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.keyring.box()
    return box


def _policy(request: Request) -> Policy:
    policy: Policy = request.app.state.ssrf_policy
    return policy


@dataclass(frozen=True, slots=True)
class EventChoice:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class EventGroup:
    title: str
    types: list[EventChoice]


def _first_sentence(text: str) -> str:
    """The gist of a type's description, for a line under its checkbox."""
    sentence = text.split(": ", 1)[0].split(". ", 1)[0].rstrip(".")
    return re.sub(r"\s*\([^)]*\)", "", sentence).replace("`", "")


def event_groups(request: Request) -> list[EventGroup]:
    """The deployment's event types, keyservice's own by resource, then the product's."""
    groups: dict[str, list[EventChoice]] = {}
    titles = {
        "key": "API keys",
        "application": "Applications",
        "member": "Members",
        "usage": "Usage",
        "webhook": "Webhooks",
    }
    for kind in events.event_types():
        title = titles.get(kind.name.partition(".")[0], "keyservice")
        groups.setdefault(title, []).append(
            EventChoice(kind.name, _first_sentence(kind.description))
        )
    product = [
        EventChoice(t.name, str((t.schema or {}).get("description", "")))
        for t in sorted(_product(request).types, key=lambda t: t.name)
    ]
    return [
        *(EventGroup(title, types) for title, types in groups.items()),
        EventGroup("Your product's events", product),
    ]


def _type_names(request: Request) -> list[str]:
    return [t.name for group in event_groups(request) for t in group.types]


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
    endpoint: WebhookEndpoint | None = None,
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


def _field_problem(error: KeyServiceError) -> web.Problem:
    """The API's problem, its message under the field it names (``url``, ``event_types.2``)."""
    problem = web.Problem.of(error)
    field = str(error.extensions.get("field") or "")
    if field and not problem.fields:
        name = field.split(".")[0]
        problem.fields[name] = error.detail.removeprefix(f"{field}: ")
    return problem


def duration(seconds: float) -> str:
    """A setting's length of time in words: ``5 days``, ``24 hours``, ``90 minutes``."""
    unit, size = next(
        ((u, s) for u, s in (("day", 86400), ("hour", 3600), ("minute", 60)) if seconds >= 2 * s),
        ("second", 1),
    )
    amount = f"{round(seconds / size, 1):g}"
    return f"{amount} {unit}{'' if amount == '1' else 's'}"


def _disable_after(settings: Settings) -> str:
    return duration(settings.webhook_disable_after_seconds)


@router.get("")
async def list_endpoints(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
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
        disable_after=_disable_after(settings),
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
        page = _form_page(request, visitor, values=values, problem=_field_problem(error))
        return await web.undone(session, page)
    return web.render(
        request, "webhooks/secret.html", visitor, endpoint=endpoint, secret=secret, rotated=False
    )


@router.get("/{endpoint_id}")
async def show_endpoint(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Reader,
    endpoint_id: uuid.UUID,
    saved: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    endpoint = await service.get_endpoint(
        session, account_id=visitor.account_id, endpoint_id=endpoint_id
    )
    subscribed = list(endpoint.event_types)
    return web.render(
        request,
        "webhooks/show.html",
        visitor,
        endpoint=endpoint,
        saved=saved,
        groups=event_groups(request),
        chosen=subscribed[0] if subscribed else "key.created",
        disable_after=_disable_after(settings),
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
    if settings.webhook_secret_grace_seconds > 0:
        old = (
            "The current secret keeps signing beside the new one for "
            f"{duration(settings.webhook_secret_grace_seconds)} "
            "(both signatures are in the webhook-signature header), so that your receiver "
            "can switch without refusing a delivery. After that, a receiver that still "
            "verifies with the current secret refuses every delivery."
        )
    else:
        old = (
            "The current secret stops signing at once: a receiver that still verifies with "
            "it refuses every delivery from now on."
        )
    return web.render(
        request,
        "confirm.html",
        visitor,
        section="webhooks",
        title="Rotate the signing secret?",
        consequences=[
            f"A new secret signs every delivery to {endpoint.url} from now on. It is shown "
            "once, on the next page.",
            old,
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
            "Its delivery log goes with it. This cannot be undone.",
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
            sender=request.app.state.runtime.delivery.tester,
            product=_product(request),
        )
    except ValidationError as error:
        problem = web.Problem.of_validation(error)
    except KeyServiceError as error:
        if error.status != 422:
            raise
        problem = _field_problem(error)
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


# The delivery log

Status = Literal["pending", "delivered", "failed"]


async def _deliveries_page(
    request: Request,
    session: AsyncSession,
    visitor: web.Visitor,
    endpoint_id: uuid.UUID,
    *,
    status: Status | None = None,
    event_type: str | None = None,
    cursor: str | None = None,
    saved: str | None = None,
    problem: web.Problem | None = None,
    since: str = "",
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
    filters = {"status": status or "", "event_type": event_type or ""}
    return web.render(
        request,
        "webhooks/deliveries.html",
        visitor,
        status_code=problem.status if problem else 200,
        endpoint=endpoint,
        messages=messages,
        next_cursor=next_cursor,
        cursor=cursor,
        filters=filters,
        statuses=STATUSES,
        types=_type_names(request),
        saved=saved,
        problem=problem,
        since=since,
        can_write=visitor.can(WRITE),
    )


@router.get("/{endpoint_id}/deliveries")
async def deliveries(
    request: Request,
    session: SessionDep,
    visitor: Reader,
    endpoint_id: uuid.UUID,
    status: Annotated[Status | None, web.Blank, Query()] = None,
    # An empty event type, "any", passes the pattern and reads as no filter below.
    event_type: Annotated[str | None, Query(max_length=64, pattern=EVENT_TYPE_FILTER)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    saved: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return await _deliveries_page(
        request,
        session,
        visitor,
        endpoint_id,
        status=status,
        event_type=event_type,
        cursor=cursor,
        saved=saved,
    )


def _back_to_log(endpoint_id: uuid.UUID, form: Any, saved: str) -> str:
    """The log as it was filtered when the form was sent, with what was done."""
    query = [f"saved={saved}"]
    status = str(form.get("status", ""))
    if status in STATUSES:
        query.append(f"status={status}")
    event_type = str(form.get("event_type", ""))
    if event_type and len(event_type) <= 64 and re.fullmatch(EVENT_TYPE_FILTER, event_type):
        query.append(f"event_type={event_type}")
    return f"/webhooks/{endpoint_id}/deliveries?" + "&".join(query)


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
    form = await request.form()
    return web.redirect(request, _back_to_log(endpoint_id, form, "redelivered"))


def since_of(local: str, offset_minutes: str) -> datetime:
    """A moment picked in a ``datetime-local`` field, as UTC: the browser's offset from UTC at
    that moment (``Date.getTimezoneOffset()``, minutes, UTC = local + offset) comes with the
    form; without it, the field was in UTC, as the page then says. ``ValueError`` if either
    is not one."""
    moment = datetime.fromisoformat(local)
    if moment.tzinfo is not None:
        raise ValueError("a local time has no offset")
    offset = int(offset_minutes or 0)
    if not -16 * 60 <= offset <= 16 * 60:
        raise ValueError("no time zone is that far from UTC")
    return moment.replace(tzinfo=UTC) + timedelta(minutes=offset)


@router.post("/{endpoint_id}/replay")
async def replay(
    request: Request, session: SessionDep, visitor: Writer, endpoint_id: uuid.UUID
) -> Response:
    """Every failed message since a moment of the browser's clock."""
    form = await request.form()
    since = str(form.get("since", "")).strip()
    try:
        body = Replay(since=since_of(since, str(form.get("tz_offset", "0")).strip()))
    except (ValueError, ValidationError):
        problem = web.Problem(
            title="The form has errors",
            detail="Correct the fields marked below.",
            status=422,
            fields={"since": "Choose the date and time from which to replay the failures."},
        )
        return await _deliveries_page(
            request, session, visitor, endpoint_id, problem=problem, since=since
        )
    replayed = await service.replay(
        session, visitor.principal, endpoint_id=endpoint_id, since=body.since
    )
    return web.redirect(request, _back_to_log(endpoint_id, form, f"replayed-{replayed}"))

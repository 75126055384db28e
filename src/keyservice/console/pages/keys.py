"""API keys of the account's applications: list, generate (the secret shown once), rotate,
revoke."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from keyservice.applications import service as applications_service
from keyservice.config import Settings, SettingsDep
from keyservice.console import web
from keyservice.db import SessionDep
from keyservice.errors import InvalidScope, KeyServiceError, ValidationFailed
from keyservice.keys import service
from keyservice.keys.schemas import KeyCreate, KeyRotate
from keyservice.models import ApiKey, Application, KeyKind, KeyStatus
from keyservice.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageParams
from keyservice.ratelimit.policy import effective_limits
from keyservice.scopes import catalogue
from keyservice.security import Environment

router = APIRouter(prefix="/keys")

Reader = Annotated[web.Visitor, Depends(web.requires("keyservice:keys:read"))]
Writer = Annotated[web.Visitor, Depends(web.requires("keyservice:keys:write"))]
WRITE = "keyservice:keys:write"

EXPIRY_CHOICES = (("30d", "30 days"), ("90d", "90 days"), ("180d", "180 days"), ("never", "Never"))
PERIODS = (("1", "second"), ("60", "minute"), ("3600", "hour"), ("86400", "day"))
GRACE_CHOICES = (
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("259200", "3 days"),
    ("604800", "7 days"),
)
PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def per_period(seconds: int | None) -> str:
    """ "per minute", or "per 300 seconds" for a period a form does not offer."""
    seconds = seconds or 1
    return f"per {PERIOD_NAMES[seconds]}" if seconds in PERIOD_NAMES else f"per {seconds} seconds"


async def _applications(session: SessionDep, visitor: web.Visitor) -> list[Application]:
    # The first page: the choice of an application in a form (a select), by newest.
    applications, _ = await applications_service.list_applications(
        session, account_id=visitor.account_id, page=PageParams(limit=MAX_PAGE_SIZE, cursor=None)
    )
    return list(applications)


@router.get("")
async def list_keys(
    request: Request,
    session: SessionDep,
    visitor: Reader,
    application_id: Annotated[uuid.UUID | None, web.Blank, Query()] = None,
    environment: Annotated[Environment | None, web.Blank, Query()] = None,
    status: Annotated[KeyStatus | None, web.Blank, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    keys, next_cursor = await service.list_keys(
        session,
        visitor.principal,
        page=PageParams(limit=DEFAULT_PAGE_SIZE, cursor=cursor),
        application_id=application_id,
        environment=environment,
        status=status,
        kind=KeyKind.application,
    )
    applications = await _applications(session, visitor)
    filters = {
        "application_id": str(application_id) if application_id else "",
        "environment": environment.value if environment else "",
        "status": status.value if status else "",
    }
    return web.render(
        request,
        "keys/list.html",
        visitor,
        section="keys",
        keys=keys,
        now=datetime.now(UTC),
        next_cursor=next_cursor,
        applications=applications,
        names={a.id: a.name for a in applications},
        filters=filters,
        filtered=any(filters.values()),
        filter_query=urlencode({name: value for name, value in filters.items() if value}),
        paged=cursor is not None,
        can_write=visitor.can(WRITE),
    )


def _form_page(
    request: Request,
    visitor: web.Visitor,
    *,
    applications: list[Application],
    application: Application | None,
    values: dict[str, Any],
    problem: web.Problem | None = None,
) -> Response:
    return web.render(
        request,
        "keys/new.html",
        visitor,
        section="keys",
        status_code=problem.status if problem else 200,
        applications=applications,
        application=application,
        values=values,
        problem=problem,
        expiry_choices=EXPIRY_CHOICES,
        periods=PERIODS,
    )


DEFAULT_VALUES: dict[str, Any] = {
    "name": "",
    "scopes": [],
    "environment": "live",
    "expires_in": "90d",
    "expires_on": "",
    "rate_limit": "",
    "rate_period": "60",
    "rate_burst": "",
    "monthly_quota": "",
}


@router.get("/new")
async def new_key(
    request: Request,
    session: SessionDep,
    visitor: Writer,
    application_id: Annotated[uuid.UUID | None, Query()] = None,
) -> Response:
    applications = await _applications(session, visitor)
    application = None
    if application_id is not None:
        application = await applications_service.get_application(
            session, account_id=visitor.account_id, application_id=application_id
        )
    elif applications:
        application = applications[0]
    return _form_page(
        request,
        visitor,
        applications=applications,
        application=application,
        values=dict(DEFAULT_VALUES),
    )


def _key_request(form: FormData, values: dict[str, Any]) -> KeyCreate:
    """The API's request body, from the form's fields (so that both are checked alike)."""
    body: dict[str, Any] = {
        "name": values["name"],
        "scopes": values["scopes"],
        "environment": values["environment"],
    }
    if values["expires_in"] == "date":
        if not values["expires_on"]:
            raise ValidationFailed(
                "Choose the day the key expires",
                errors=[{"field": "expires_on", "message": "Choose a day."}],
            )
        # The day the browser shows, at its end, in the browser's time zone.
        try:
            day = datetime.fromisoformat(values["expires_on"]).replace(tzinfo=UTC)
            offset = int(str(form.get("tz_offset", "0")) or 0)
        except ValueError:
            raise ValidationFailed(
                "The expiry day is not a date",
                errors=[{"field": "expires_on", "message": "Choose a day."}],
            ) from None
        body["expires_at"] = day + timedelta(days=1, minutes=max(-900, min(900, offset)))
    else:
        body["expires_in"] = values["expires_in"]
    if values["rate_limit"]:
        body["rate_limit"] = {
            "limit": values["rate_limit"],
            "period_seconds": values["rate_period"],
            "burst": values["rate_burst"] or None,
        }
    if values["monthly_quota"]:
        body["monthly_quota"] = values["monthly_quota"]
    return KeyCreate.model_validate(body)


# The form's fields of the API's rate_limit object.
RATE_FIELDS = {"limit": "rate_limit", "period_seconds": "rate_period", "burst": "rate_burst"}


def _form_problem(error: ValidationError) -> web.Problem:
    """The API's validation errors, each next to the form's field it concerns."""
    problem = web.Problem.of_validation(error)
    fields = dict(problem.fields)
    # The rate limit is one object in the API, three fields here.
    first = next((e["loc"] for e in error.errors() if e["loc"][:1] == ("rate_limit",)), None)
    if first and len(first) > 1 and str(first[1]) in RATE_FIELDS:
        fields[RATE_FIELDS[str(first[1])]] = fields.pop("rate_limit")
    # KeyCreate's checks of the whole body are all about the expiry.
    message = fields.pop("form", None)
    if message is not None:
        fields["expires_on"] = message.replace("Expires_at", "The expiry").replace(
            "expires_at", "the expiry"
        )
    return replace(problem, fields=fields)


@router.post("")
async def create_key(
    request: Request, session: SessionDep, settings: SettingsDep, visitor: Writer
) -> Response:
    form = await request.form()
    values = {
        **DEFAULT_VALUES,
        **{name: str(form.get(name, "")).strip() for name in DEFAULT_VALUES if name != "scopes"},
        "scopes": [str(s) for s in form.getlist("scopes")],
    }
    applications = await _applications(session, visitor)
    try:
        application_id = uuid.UUID(str(form.get("application_id", "")))
    except ValueError:
        problem = web.Problem(
            title="Choose an application",
            detail="A key belongs to an application; create one first.",
            status=422,
            fields={"application_id": "Choose an application."},
        )
        return _form_page(
            request,
            visitor,
            applications=applications,
            application=None,
            values=values,
            problem=problem,
        )
    application = await applications_service.get_application(
        session, account_id=visitor.account_id, application_id=application_id
    )
    try:
        body = _key_request(form, values)
        key, secret = await service.create_application_key(
            session,
            visitor.principal,
            application.id,
            body,
            catalogue=catalogue(settings.scopes),
            prefix=settings.key_prefix,
        )
    except ValidationError as error:
        problem = _form_problem(error)
    except InvalidScope as error:
        problem = web.Problem.of(error)
        # The scope's own words, next to the scopes' checkboxes.
        problem = replace(problem, fields={**problem.fields, "scopes": error.detail + "."})
    except KeyServiceError as error:
        problem = web.Problem.of(error)
    else:
        return web.render(
            request,
            "keys/secret.html",
            visitor,
            section="keys",
            key=key,
            secret=secret,
            application=application,
            rotated=False,
        )
    return await web.undone(
        session,
        _form_page(
            request,
            visitor,
            applications=applications,
            application=application,
            values=values,
            problem=problem,
        ),
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """A limit that applies to a key, in words, and whose it is."""

    text: str
    source: str


def limits_of(
    settings: Settings, key: ApiKey, application: Application | None
) -> tuple[Limit | None, Limit | None]:
    """The rate limit and the quota that apply to ``key``: its own, else its application's,
    else the deployment's, as verification applies them."""
    limits = effective_limits(settings, key, application)

    def source(field: str) -> str:
        if getattr(key, field) is not None:
            return "this key's own"
        if application is not None and getattr(application, field) is not None:
            return "the application's"
        return "the deployment's default"

    rate, quota = limits.rate, limits.monthly_quota
    return (
        Limit(
            f"{rate.limit:,} requests {per_period(rate.period_seconds)}, bursts of {rate.burst:,}",
            source("rate_limit"),
        )
        if rate
        else None,
        Limit(f"{quota:,} requests", source("monthly_quota")) if quota else None,
    )


@router.get("/{key_id}")
async def show_key(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Reader,
    key_id: uuid.UUID,
    saved: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    key = await service.get_key(session, visitor.principal, key_id)
    application = await service.get_application_of(session, key)
    now = datetime.now(UTC)
    status = key.status_at(now)
    # A secret kept by a rotation's grace period, while it still works.
    previous_until = (
        key.previous_expires_at
        if status is KeyStatus.active
        and key.previous_expires_at is not None
        and key.previous_expires_at > now
        else None
    )
    return web.render(
        request,
        "keys/show.html",
        visitor,
        section="keys",
        key=key,
        status=status.value,
        previous_until=previous_until,
        limits=limits_of(settings, key, application),
        application=application,
        saved=saved,
        can_write=visitor.can(WRITE),
    )


@router.get("/{key_id}/rotate")
async def confirm_rotate(
    request: Request, session: SessionDep, visitor: Writer, key_id: uuid.UUID
) -> Response:
    key = await service.get_key(session, visitor.principal, key_id)
    return web.render(
        request,
        "keys/rotate.html",
        visitor,
        section="keys",
        key=key,
        grace_choices=GRACE_CHOICES,
    )


@router.post("/{key_id}/rotate")
async def rotate_key(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Writer,
    key_id: uuid.UUID,
) -> Response:
    form = await request.form()
    try:
        body = KeyRotate(grace_period_seconds=str(form.get("grace_period_seconds", "0")) or 0)
    except ValidationError as error:
        return web.problem_page(request, web.Problem.of_validation(error), visitor=visitor)
    key, secret = await service.rotate_key(
        session,
        visitor.principal,
        key_id,
        grace=timedelta(seconds=body.grace_period_seconds),
        prefix=settings.key_prefix,
    )
    application = await service.get_application_of(session, key)
    return web.render(
        request,
        "keys/secret.html",
        visitor,
        section="keys",
        key=key,
        secret=secret,
        application=application,
        rotated=True,
    )


@router.get("/{key_id}/revoke")
async def confirm_revoke(
    request: Request, session: SessionDep, visitor: Writer, key_id: uuid.UUID
) -> Response:
    key = await service.get_key(session, visitor.principal, key_id)
    return web.render(
        request,
        "confirm.html",
        visitor,
        section="keys",
        title=f"Revoke {key.name}?",
        consequences=[
            f"The key {key.hint} stops working at once, everywhere: every request made with it "
            "is refused from now on.",
            "Revoking cannot be undone; to restore access, generate a new key.",
        ],
        action=f"/keys/{key.id}/revoke",
        button="Revoke key",
        cancel=f"/keys/{key.id}",
    )


@router.post("/{key_id}/revoke")
async def revoke_key(
    request: Request, session: SessionDep, visitor: Writer, key_id: uuid.UUID
) -> Response:
    await service.revoke_key(session, visitor.principal, key_id)
    return web.redirect(request, f"/keys/{key_id}?saved=revoked")

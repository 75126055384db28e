"""Liveness and readiness probes, metrics, and the scope catalogue."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from keyservice import metrics
from keyservice.availability import describe
from keyservice.config import SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import (
    DatabaseUnavailable,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    responses,
)
from keyservice.migrate import current_revision
from keyservice.scopes import KEYSERVICE_SCOPES

router = APIRouter()


class Status(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class Scopes(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "product": ["contacts:read", "contacts:write"],
                    "keyservice": ["keyservice:keys:read", "keyservice:keys:write"],
                }
            ]
        }
    )

    product: list[str]
    keyservice: list[str]


@router.get("/healthz", tags=["health"])
async def healthz() -> Status:
    """Liveness: the process answers. Touches nothing else."""
    return Status(status="ok")


@router.get(
    "/readyz", tags=["health"], responses=responses(ServiceUnavailable, DatabaseUnavailable)
)
async def readyz(request: Request, session: SessionDep) -> Status:
    """Readiness: the database answers and its schema is at the migrations' head; otherwise a
    503 that says which, and why (the database's error, as its kind)."""
    try:
        connection = await session.connection()
        revision = await current_revision(connection)
    except Exception as exc:
        availability = request.app.state.availability
        if availability.failed(exc):
            raise availability.error() from None
        raise ServiceUnavailable(
            f"The database does not answer as expected ({describe(exc)})"
        ) from None
    if revision != request.app.state.head_revision:
        raise ServiceUnavailable(
            "The database schema is not at the current migration; run `keyservice migrate`"
        )
    return Status(status="ready")


@router.get("/v1/scopes", tags=["scopes"])
async def list_scopes(settings: SettingsDep) -> Scopes:
    """The scope catalogue: the product's scopes, which applications and keys may hold, and
    keyservice's own, which protect this API. `resource:*` grants every scope under `resource:`."""
    return Scopes(product=list(settings.scopes), keyservice=list(KEYSERVICE_SCOPES))


class MetricsUnauthorized(Unauthorized):
    slug = "metrics-unauthorized"
    title = "GET /metrics needs the deployment's metrics token"


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={
        200: {
            "description": "The metrics in Prometheus' text format.",
            "content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}},
        },
        **responses(MetricsUnauthorized, NotFound),
    },
)
async def get_metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus metrics: verifications by path and answer, the key cache, lookups and leases,
    rate-limit refusals, the usage flush, the database pool, and HTTP requests by route template
    and status with their latency. No metric has a per-key label. When the deployment sets
    `KEYSERVICE_METRICS_TOKEN`, send it as `Authorization: Bearer <token>`."""
    if not settings.metrics_enabled:
        raise NotFound("Metrics are off in this deployment (KEYSERVICE_METRICS_ENABLED)")
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
        sent = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, expected):
            raise MetricsUnauthorized("Send the metrics token as 'Authorization: Bearer <token>'")
    request.app.state.runtime.sample_metrics()
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

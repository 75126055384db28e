from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime

from keyservice.accounts import service as accounts_service
from keyservice.config import SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import NotFound, responses
from keyservice.keys import service as keys_service
from keyservice.ratelimit.limiter import Limiter
from keyservice.ratelimit.schemas import AlertThresholds
from keyservice.usage import service
from keyservice.usage.schemas import AccountUsage, Granularity, KeyUsage
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal

router = APIRouter(tags=["usage"])


async def _limiter(request: Request) -> Limiter:
    limiter: Limiter = request.app.state.runtime.limiter
    return limiter


LimiterDep = Annotated[Limiter, Depends(_limiter)]
UsageReader = Annotated[Principal, Depends(require("keyservice:usage:read"))]
GranularityQuery = Annotated[Granularity, Query(description="`hour` or `day`.")]
StartQuery = Annotated[
    AwareDatetime | None, Query(description="Series start; default 24 h (hour) or 30 days ago.")
]
EndQuery = Annotated[AwareDatetime | None, Query(description="Series end; default now.")]


@router.get("/v1/keys/{key_id}/usage", responses=responses(*AUTH_ERRORS, NotFound))
async def get_key_usage(
    session: SessionDep,
    settings: SettingsDep,
    actor: UsageReader,
    key_id: uuid.UUID,
    limiter: LimiterDep,
    granularity: GranularityQuery = Granularity.hour,
    start: StartQuery = None,
    end: EndQuery = None,
) -> KeyUsage:
    """One key's usage for its usage page, in one call: requests this hour and this month
    (allowed and refused apart), a series by hour (up to 31 days) or by day (up to 366), the
    busiest endpoints, its limits with what is left of its monthly quota, and the thresholds at
    which its usage raises alerts."""
    key = await keys_service.get_key(session, actor, key_id)
    hour, month, series, endpoints = await service.key_usage(
        session, key, granularity=granularity, start=start, end=end
    )
    application = await keys_service.get_application_of(session, key)
    return KeyUsage(
        key_id=key.id,
        current_hour=hour,
        current_month=month,
        series=series,
        top_endpoints=endpoints,
        limits=await service.key_limits(session, settings, limiter, key, application),
        alert_thresholds=AlertThresholds.of(
            (await keys_service.alert_thresholds(session, settings, [key]))[key.id]
        ),
    )


@router.get("/v1/usage", responses=responses(*AUTH_ERRORS))
async def get_account_usage(
    session: SessionDep,
    settings: SettingsDep,
    actor: UsageReader,
    granularity: GranularityQuery = Granularity.hour,
    start: StartQuery = None,
    end: EndQuery = None,
) -> AccountUsage:
    """The account's usage across all its keys: this hour, this month, a series, the busiest
    endpoints and keys, and the alert thresholds of its keys that set none of their own."""
    hour, month, series, endpoints, keys = await service.account_usage(
        session, actor.account_id, granularity=granularity, start=start, end=end
    )
    account = await accounts_service.get_account(session, actor.account_id)
    return AccountUsage(
        current_hour=hour,
        current_month=month,
        series=series,
        top_endpoints=endpoints,
        top_keys=keys,
        alert_thresholds=AlertThresholds.of(accounts_service.alert_thresholds(settings, account)),
    )

"""Usage: the current hour and month, a graph over time, the busiest endpoints, quotas and the
alert thresholds, for the account or one key."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from keyservice.accounts import service as accounts_service
from keyservice.config import Settings, SettingsDep
from keyservice.console import web
from keyservice.db import SessionDep
from keyservice.keys import service as keys_service
from keyservice.models import ApiKey, KeyKind
from keyservice.pagination import MAX_PAGE_SIZE, PageParams
from keyservice.ratelimit.limiter import Limiter
from keyservice.usage import service
from keyservice.usage.schemas import Granularity, Series

router = APIRouter(prefix="/usage")

Reader = Annotated[web.Visitor, Depends(web.requires("keyservice:usage:read"))]


def chart_data(series: Series) -> str:
    """The series as the chart script reads it, from a data attribute (no inline script): times
    in seconds since the epoch, and a column per count."""
    return json.dumps(
        {
            "granularity": series.granularity.value,
            "t": [int(p.start.timestamp()) for p in series.points],
            "allowed": [p.allowed for p in series.points],
            "refused": [p.refused for p in series.points],
            "rate_limited": [p.rate_limited for p in series.points],
        },
        separators=(",", ":"),
    )


async def alert_thresholds(
    session: SessionDep, settings: Settings, account_id: uuid.UUID, key: ApiKey | None
) -> dict[str, Any]:
    """The thresholds in force that raise ``usage.threshold`` alerts: the key's (its own, else
    its account's, else the deployment's), or the account's for its keys that set none."""
    if key is not None:
        thresholds = (await keys_service.alert_thresholds(session, settings, [key]))[key.id]
    else:
        account = await accounts_service.get_account(session, account_id)
        thresholds = accounts_service.alert_thresholds(settings, account)
    return {
        "quota_percents": list(thresholds.quota_percents),
        "rate_limited_refusals": thresholds.rate_limited_refusals,
    }


@router.get("")
async def usage(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    visitor: Reader,
    key_id: Annotated[uuid.UUID | None, web.Blank, Query()] = None,
    granularity: Annotated[Granularity, Query()] = Granularity.hour,
) -> Response:
    keys, _ = await keys_service.list_keys(
        session,
        visitor.principal,
        page=PageParams(limit=MAX_PAGE_SIZE, cursor=None),
        kind=KeyKind.application,
    )
    context: dict[str, Any] = {"key": None, "limits": None, "top_keys": []}
    if key_id is not None:
        key = await keys_service.get_key(session, visitor.principal, key_id)
        hour, month, series, endpoints = await service.key_usage(
            session, key, granularity=granularity, start=None, end=None
        )
        limiter: Limiter = request.app.state.runtime.limiter
        application = await keys_service.get_application_of(session, key)
        context |= {
            "key": key,
            "limits": await service.key_limits(session, settings, limiter, key, application),
        }
    else:
        key = None
        hour, month, series, endpoints, top_keys = await service.account_usage(
            session, visitor.account_id, granularity=granularity, start=None, end=None
        )
        context["top_keys"] = top_keys
    return web.render(
        request,
        "usage/page.html",
        visitor,
        section="usage",
        keys=keys,
        granularity=granularity.value,
        current_hour=hour,
        current_month=month,
        series=series,
        chart=chart_data(series),
        endpoints=endpoints,
        thresholds=await alert_thresholds(session, settings, visitor.account_id, key),
        **context,
    )

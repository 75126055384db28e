from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keyservice.ratelimit.schemas import AlertThresholds, RateLimit


class Granularity(StrEnum):
    hour = "hour"
    day = "day"


class Counts(BaseModel):
    allowed: int
    refused: int
    rate_limited: int = Field(description="Of the refused, those refused by the key's limits.")


class Point(Counts):
    start: datetime


class EndpointCounts(Counts):
    endpoint: str


class KeyCounts(Counts):
    key_id: uuid.UUID
    name: str | None


class Series(BaseModel):
    granularity: Granularity
    start: datetime
    end: datetime
    points: list[Point] = Field(description="One per hour or day, zeros included, oldest first.")


class Limits(BaseModel):
    rate_limit: RateLimit | None = Field(description="The rate limit in force.")
    monthly_quota: int | None
    quota_remaining: int | None = Field(description="Requests left this month.")
    quota_resets_at: datetime | None


_EXAMPLE: dict[str, Any] = {
    "current_hour": {"allowed": 1250, "refused": 3, "rate_limited": 2},
    "current_month": {"allowed": 48210, "refused": 97, "rate_limited": 90},
    "series": {
        "granularity": "hour",
        "start": "2026-11-20T10:00:00Z",
        "end": "2026-11-21T10:00:00Z",
        "points": [
            {"start": "2026-11-20T10:00:00Z", "allowed": 1180, "refused": 0, "rate_limited": 0}
        ],
    },
    "top_endpoints": [
        {"endpoint": "GET /v1/contacts", "allowed": 30112, "refused": 40, "rate_limited": 38}
    ],
}


class KeyUsage(BaseModel):
    """Everything a usage page draws for one key, in one call."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key_id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
                    **_EXAMPLE,
                    "limits": {
                        "rate_limit": {"limit": 100, "period_seconds": 1, "burst": 100},
                        "monthly_quota": 100000,
                        "quota_remaining": 51790,
                        "quota_resets_at": "2026-12-01T00:00:00Z",
                    },
                    "alert_thresholds": {"quota_percents": [80, 100], "rate_limited_refusals": 100},
                }
            ]
        }
    )

    key_id: uuid.UUID
    current_hour: Counts
    current_month: Counts
    series: Series
    top_endpoints: list[EndpointCounts] = Field(
        description="Over the series' range, busiest first."
    )
    limits: Limits
    alert_thresholds: AlertThresholds = Field(
        description="When the key's usage raises `usage.threshold` alerts: its own thresholds, "
        "else its account's, else the deployment's."
    )


class AccountUsage(BaseModel):
    """The whole account's usage: every key's requests on this account."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE,
                    "top_keys": [
                        {
                            "key_id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
                            "name": "Production Integration",
                            "allowed": 40000,
                            "refused": 12,
                            "rate_limited": 10,
                        }
                    ],
                    "alert_thresholds": {"quota_percents": [80, 100], "rate_limited_refusals": 100},
                }
            ]
        }
    )

    current_hour: Counts
    current_month: Counts
    series: Series
    top_endpoints: list[EndpointCounts]
    top_keys: list[KeyCounts] = Field(description="Over the series' range, busiest first.")
    alert_thresholds: AlertThresholds = Field(
        description="When usage raises `usage.threshold` alerts for the account's keys that set "
        "no thresholds of their own: the account's, else the deployment's."
    )

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from keyservice.ratelimit import policy
from keyservice.ratelimit.policy import HasLimits

MAX_LIMIT = 1_000_000_000


class RateLimit(BaseModel):
    """A token bucket: `limit` requests per `period_seconds`, with bursts of up to `burst`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"limit": 100, "period_seconds": 60, "burst": 20}]},
    )

    limit: int = Field(ge=1, le=MAX_LIMIT)
    period_seconds: int = Field(default=1, ge=1, le=86400, description="1 s to 1 day.")
    burst: int | None = Field(
        default=None, ge=1, le=MAX_LIMIT, description="Bucket size; default: `limit`."
    )

    @model_validator(mode="after")
    def _default_burst(self) -> Self:
        if self.burst is None:
            self.burst = self.limit
        return self

    @classmethod
    def of(cls, row: HasLimits) -> RateLimit | None:
        if row.rate_limit is None:
            return None
        return cls(
            limit=row.rate_limit, period_seconds=row.rate_period_seconds or 1, burst=row.rate_burst
        )


QUOTA_FIELD = Field(
    default=None,
    ge=1,
    le=2**53,
    description="Requests per calendar month (UTC). Null inherits.",
)
RATE_FIELD = Field(
    default=None,
    description="Overrides the inherited rate limit (key, then application, then deployment). "
    "Null inherits.",
)


def limit_columns(rate_limit: RateLimit | None) -> dict[str, int | None]:
    if rate_limit is None:
        return {"rate_limit": None, "rate_period_seconds": None, "rate_burst": None}
    return {
        "rate_limit": rate_limit.limit,
        "rate_period_seconds": rate_limit.period_seconds,
        "rate_burst": rate_limit.burst,
    }


MAX_ALERT_PERCENTS = 5


def _distinct_sorted(percents: list[int]) -> list[int]:
    return sorted(set(percents))


AlertPercents = Annotated[
    list[Annotated[int, Field(ge=1, le=100)]],
    Field(max_length=MAX_ALERT_PERCENTS),
    AfterValidator(_distinct_sorted),
]


def alert_percents_field(inherits: str) -> Any:
    return Field(
        default=None,
        description="Shares of the monthly quota, in percent (1 to 100, at most "
        f"{MAX_ALERT_PERCENTS}), whose crossing raises a `usage.threshold` alert; `[]` for none. "
        f"Null inherits {inherits}.",
    )


def alert_refusals_field(inherits: str) -> Any:
    return Field(
        default=None,
        ge=1,
        le=MAX_LIMIT,
        description="Refusals by the rate limit or quota within an hour that raise a "
        f"`usage.threshold` alert. Null inherits {inherits}.",
    )


class AlertThresholds(BaseModel):
    """The thresholds in force: when usage raises a `usage.threshold` alert."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"quota_percents": [80, 100], "rate_limited_refusals": 100}]
        }
    )

    quota_percents: list[int] = Field(
        description="An alert when the monthly quota's use crosses each of these percents."
    )
    rate_limited_refusals: int = Field(
        description="An alert when the limits refuse a key this many times within an hour."
    )

    @classmethod
    def of(cls, thresholds: policy.AlertThresholds) -> AlertThresholds:
        return cls(
            quota_percents=list(thresholds.quota_percents),
            rate_limited_refusals=thresholds.rate_limited_refusals,
        )

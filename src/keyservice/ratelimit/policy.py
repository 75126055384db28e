"""Rate limit and quota policies, and which one applies to a key; likewise the thresholds at
which a key's usage raises alerts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from keyservice.config import Settings

# How long a lease may live, at most, and how much of a second of the key's rate it may carry.
MAX_LEASE_SECONDS = 0.2
LEASE_SHARE_SECONDS = 0.05
# A key an instance sees less often than its short leases live takes long ones: this long, of this
# share of the burst (and only if that is more than the request's own cost).
LONG_LEASE_SECONDS = 30.0
LONG_LEASE_SHARE = 16


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """A token bucket: ``limit`` requests per ``period_seconds``, holding at most ``burst``."""

    limit: int
    period_seconds: int
    burst: int

    @property
    def rate(self) -> float:
        return self.limit / self.period_seconds

    @property
    def lease_seconds(self) -> float:
        """How long a lease lives (also the length of the bucket's lease windows).

        Tokens leased in the current and the previous window count against the bucket's
        capacity; keeping that to a quarter of the burst leaves the bucket free to serve.
        """
        return min(MAX_LEASE_SECONDS, self.burst / (4 * self.rate))

    def lease_size(self, cost: int) -> int:
        """Tokens to lease for a request of ``cost``: the cost itself for a slow key (exact, one
        write per request), a share of a second of the rate for a fast one (one write per lease)."""
        share = int(self.rate * min(LEASE_SHARE_SECONDS, self.lease_seconds))
        return max(cost, min(share, self.burst))

    def long_lease_size(self, cost: int) -> int | None:
        """Tokens to lease for ``LONG_LEASE_SECONDS``, for a key used now and then: a sixteenth of
        the burst, so that the instances holding such leases keep most of it free; None when
        that would not serve more than this request."""
        size = self.burst // LONG_LEASE_SHARE
        return size if size > cost else None


@dataclass(frozen=True, slots=True)
class Limits:
    rate: RatePolicy | None
    monthly_quota: int | None

    @property
    def limited(self) -> bool:
        return self.rate is not None or self.monthly_quota is not None


class HasLimits(Protocol):
    rate_limit: int | None
    rate_period_seconds: int | None
    rate_burst: int | None
    monthly_quota: int | None


def _rate(limit: int, period: int | None, burst: int | None) -> RatePolicy:
    return RatePolicy(limit=limit, period_seconds=period or 1, burst=burst or limit)


def effective_limits(settings: Settings, *layers: HasLimits | None) -> Limits:
    """The first layer (key, then application) that sets a rate limit gives it whole, limit,
    period and burst; the quota is inherited apart."""
    rate = None
    quota = settings.monthly_quota
    for layer in reversed([layer for layer in layers if layer is not None]):
        if layer.rate_limit is not None:
            rate = _rate(layer.rate_limit, layer.rate_period_seconds, layer.rate_burst)
        if layer.monthly_quota is not None:
            quota = layer.monthly_quota
    if rate is None and settings.rate_limit is not None:
        rate = _rate(settings.rate_limit, settings.rate_period_seconds, settings.rate_burst)
    return Limits(rate=rate, monthly_quota=quota)


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """When a key's usage raises a ``usage.threshold`` alert: on crossing each share of its
    monthly quota (percents), and on being refused by its limits this many times in an hour."""

    quota_percents: tuple[int, ...]
    rate_limited_refusals: int


class HasAlertThresholds(Protocol):
    alert_quota_percents: list[int] | None
    alert_rate_limited_refusals: int | None


def effective_alert_thresholds(
    settings: Settings, *layers: HasAlertThresholds | None
) -> AlertThresholds:
    """The first layer (key, then account) that sets a threshold gives it, each apart; the
    deployment's where none does."""
    percents: Sequence[int] | None = None
    refusals: int | None = None
    for layer in layers:
        if layer is None:
            continue
        if percents is None:
            percents = layer.alert_quota_percents
        if refusals is None:
            refusals = layer.alert_rate_limited_refusals
    return AlertThresholds(
        quota_percents=tuple(
            sorted(set(settings.quota_alert_percents if percents is None else percents))
        ),
        rate_limited_refusals=(
            settings.rate_limited_alert_refusals if refusals is None else refusals
        ),
    )

"""When usage raises an alert, decided here and nowhere else.

A ``usage.threshold`` event is recorded when a key crosses a share of its monthly quota (from
the limiter's decision on the request that crossed it) or is refused by its limits a number of
times within an hour (from the usage counters, when they are written). Each once per threshold
and period: the ``dedupe_key`` says which.

The thresholds are the key's own, else its account's, else the deployment's
(``KEYSERVICE_QUOTA_ALERT_PERCENTS``, ``KEYSERVICE_RATE_LIMITED_ALERT_REFUSALS``): the verifier
hands them over from the key's cached record, so that they cost the request no query.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyservice.models import utcnow
from keyservice.ratelimit.limiter import Decision, Refusal
from keyservice.ratelimit.policy import AlertThresholds, Limits


@dataclass(frozen=True, slots=True)
class PendingEvent:
    account_id: uuid.UUID
    type: str
    key_id: uuid.UUID | None
    data: dict[str, Any]
    dedupe_key: str


class Alerts:
    def __init__(
        self,
        *,
        quota_percents: Sequence[int] = (80, 100),
        rate_limited_refusals: int = 100,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        # Where a key's own are not known.
        self.defaults = AlertThresholds(
            quota_percents=tuple(sorted(set(quota_percents))),
            rate_limited_refusals=rate_limited_refusals,
        )
        self.clock = clock

    def quota(
        self,
        key_id: uuid.UUID,
        account_id: uuid.UUID,
        limits: Limits,
        decision: Decision,
        thresholds: AlertThresholds | None = None,
    ) -> list[PendingEvent]:
        """The quota thresholds that the request's lease crossed."""
        quota = limits.monthly_quota
        if quota is None or decision.quota_leased is None:
            return []  # only a lease from the shared bucket moves the quota
        used_before, used = decision.quota_leased
        if decision.refused is Refusal.quota:
            # Too little left for this request: as good as used up, the 100% alert.
            used_before, used = min(used, quota - 1), quota
        month = f"{self.clock():%Y-%m}"
        return [
            PendingEvent(
                account_id=account_id,
                type="usage.threshold",
                key_id=key_id,
                data={
                    "key_id": str(key_id),
                    "kind": "monthly_quota",
                    "percent": percent,
                    "quota": quota,
                    "used": used,
                    "month": month,
                },
                dedupe_key=f"quota:{key_id}:{month}:{percent}",
            )
            for percent in (thresholds or self.defaults).quota_percents
            if used_before < math.ceil(quota * percent / 100) <= used
        ]

    def rate_limited(
        self, rows: Iterable[tuple[uuid.UUID, uuid.UUID, datetime, int, int]]
    ) -> Iterator[PendingEvent]:
        """For keys refused by their limits (key, account, hour, refusals in the hour, the key's
        threshold) at least their threshold's number of times."""
        for key_id, account_id, hour, refused, threshold in rows:
            if refused < threshold:
                continue
            yield PendingEvent(
                account_id=account_id,
                type="usage.threshold",
                key_id=key_id,
                data={
                    "key_id": str(key_id),
                    "kind": "rate_limited",
                    "hour": hour.isoformat(),
                    "rate_limited": refused,
                    "threshold": threshold,
                },
                dedupe_key=f"rate_limited:{key_id}:{hour:%Y%m%d%H}",
            )

"""Prometheus metrics (``GET /metrics``), through ``prometheus-client``.

No metric has a per-key (or per-account) label: their number would grow with the keys. The
verification path counts with children bound once (``_bound``), a fraction of a microsecond each;
gauges that describe a state (cache entries, pool connections, flush lag) are sampled once a
second by the runtime's metrics worker rather than updated on every change.

With several workers (``keyservice serve --workers N``) each process writes its metrics to files
in ``PROMETHEUS_MULTIPROC_DIR`` (``keyservice serve`` sets it), and whichever worker answers the
scrape reports them all (prometheus-client's multi-process mode).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
# No `*_created` series: a timestamp per counter that no dashboard of ours reads.
disable_created_metrics()  # type: ignore[no-untyped-call]
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Request latencies: most answers take a few milliseconds; the tail is what matters.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

VERIFICATIONS = Counter(
    "keyservice_verifications",
    "Verifications by where they came from (verify, forward_auth, management) and their answer "
    "(VALID or the refusal's code).",
    ["path", "code"],
)
KEY_CACHE = Counter(
    "keyservice_key_cache_requests",
    "Key cache look-ups, by result (hit or miss).",
    ["result"],
)
KEY_CACHE_ENTRIES = Gauge(
    "keyservice_key_cache_entries",
    "Keys in this instance's cache.",
    multiprocess_mode="livesum",
)
KEY_LOOKUPS = Counter(
    "keyservice_key_lookup_statements", "Statements that looked keys up in the database."
)
LEASE_STATEMENTS = Counter(
    "keyservice_lease_statements", "Statements that leased tokens from the shared buckets."
)
RATE_LIMIT_REFUSALS = Counter(
    "keyservice_rate_limit_refusals",
    "Requests refused by a key's limits, by kind (rate or quota).",
    ["kind"],
)
USAGE_FLUSH_SECONDS = Histogram(
    "keyservice_usage_flush_duration_seconds",
    "Time taken by each usage flush.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
USAGE_FLUSH_LAG = Gauge(
    "keyservice_usage_flush_lag_seconds",
    "Age of the oldest usage count not yet written (0 when all are written).",
    multiprocess_mode="livemax",
)
USAGE_DROPPED_ROWS = Counter(
    "keyservice_usage_dropped_rows",
    "Usage counters dropped: refused by the database, or beyond the bound kept in memory.",
)
DATABASE_UP = Gauge(
    "keyservice_database_reachable",
    "1 while this instance reaches its database, 0 during an outage.",
    multiprocess_mode="livemin",
)
POOL_CONNECTIONS = Gauge(
    "keyservice_db_pool_connections",
    "Database connections of this instance's pool, by state (in_use or idle).",
    ["state"],
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "keyservice_db_pool_waiting",
    "Requests waiting for a database connection when last sampled.",
    multiprocess_mode="livesum",
)
WEBHOOK_DELIVERIES = Counter(
    "keyservice_webhook_deliveries",
    "Webhook delivery attempts by outcome: delivered, retry (failed, to be retried), failed "
    "(the last retry failed) or gone (410: the endpoint is disabled).",
    ["outcome"],
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "keyservice_webhook_oldest_pending_seconds",
    "How long the most overdue webhook message has been due without being delivered (0 when "
    "none is due): a backlog, or workers that do not keep up.",
    multiprocess_mode="livemax",
)
HTTP_REQUESTS = Histogram(
    "keyservice_http_request_duration_seconds",
    "HTTP requests by route template, method and status, and how long they took.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)


class _Bound:
    """Children of labelled metrics, bound once per label values: ``labels()`` costs a
    microsecond, more than the increment it leads to."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}

    def get(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child


_bound = _Bound()
_CACHE_HIT = KEY_CACHE.labels("hit")
_CACHE_MISS = KEY_CACHE.labels("miss")
# Whether requests are counted (KEYSERVICE_METRICS_ENABLED): the process's, as the registry is.
_recording = True


def configure(*, enabled: bool) -> None:
    global _recording
    _recording = enabled


def recording() -> bool:
    return _recording


def verification(path: str, code: str) -> None:
    if _recording:
        _bound.get(VERIFICATIONS, path, code).inc()


def cache_lookup(*, hit: bool) -> None:
    if _recording:
        (_CACHE_HIT if hit else _CACHE_MISS).inc()


def http_request(route: str, method: str, status: int, seconds: float) -> None:
    if _recording:
        _bound.get(HTTP_REQUESTS, route, method, str(status)).observe(seconds)


def rate_limit_refusal(kind: str) -> None:
    _bound.get(RATE_LIMIT_REFUSALS, kind).inc()


def webhook_delivery(outcome: str) -> None:
    _bound.get(WEBHOOK_DELIVERIES, outcome).inc()


def exposition() -> bytes:
    """The metrics in Prometheus' text format: this process's, or every worker's."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)

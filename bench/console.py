"""The console's pages under a big account: 1,000 keys with 30 days of hourly usage each.

keyservice is started as ``keyservice serve`` starts it (production mode, its request log
included) on a throw-away PostgreSQL database, which is filled straight through SQL: the
account, 5 applications, 1,000 keys, 720,000 hourly usage rows (one per key and hour, over 4
endpoints), 10,000 audit events and a webhook endpoint. Each page is then fetched one request at
a time by a signed-in browser's cookie (no concurrency: the time of one page, not a load test),
and its time from request to last byte is recorded: the server's time plus a loopback round
trip. Goal: p95 under 100 ms for every page.

    python -m bench.console [--requests 100] [--output docs/console-performance.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import select

from bench import BenchError, say
from bench.database import ENCRYPTION_KEY, blocking, create_keys, database, prepare
from bench.instance import ROOT, serve
from bench.run import POSTGRES_URL, plan_cpus
from keyservice.config import Settings
from keyservice.console.web import SESSION_COOKIE
from keyservice.db import create_engine, create_sessionmaker
from keyservice.keys.service import new_key
from keyservice.models import KeyKind, User, utcnow
from keyservice.scopes import catalogue
from keyservice.security import Environment

KEYS = 1000
APPLICATIONS = 5
DAYS = 30
ENDPOINTS = ("GET /v1/contacts", "POST /v1/contacts", "GET /v1/deals", "POST /v1/automations")
AUDIT_EVENTS = 10_000
GOAL_MS = 100.0


@dataclass
class PageTimes:
    page: str
    status: int
    times_ms: list[float]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def met(self) -> bool:
        return self.status == 200 and self.quantile(0.95) < GOAL_MS


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@blocking
async def fill(url: str) -> None:
    """Usage for every key, every hour of the last 30 days, and its rollups; audit events; in
    SQL, at once."""
    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        hour = utcnow().replace(minute=0, second=0, microsecond=0)
        await connection.execute(
            """
            INSERT INTO usage_counters (key_id, endpoint, hour, account_id, allowed, refused,
                                        rate_limited)
            SELECT k.id, ($3::text[])[1 + (h.n % 4)], $1::timestamptz - make_interval(hours => h.n),
                   k.account_id, 20 + (h.n * 7) % 50, (h.n % 9) / 4, (h.n % 9) / 8
            FROM api_keys k CROSS JOIN generate_series(0, $2 - 1) AS h(n)
            WHERE k.kind = 'application'
            """,
            hour,
            DAYS * 24,
            list(ENDPOINTS),
        )
        # The rollups, as the flusher writes them with the counters (those of the few requests
        # made so far are rebuilt with the rest).
        await connection.execute(
            """
            INSERT INTO usage_account_hours (account_id, hour, endpoint, allowed, refused,
                                             rate_limited)
            SELECT account_id, hour, endpoint, sum(allowed), sum(refused), sum(rate_limited)
            FROM usage_counters GROUP BY account_id, hour, endpoint
            ON CONFLICT (account_id, hour, endpoint) DO UPDATE SET allowed = excluded.allowed,
                refused = excluded.refused, rate_limited = excluded.rate_limited
            """
        )
        await connection.execute(
            """
            INSERT INTO usage_key_days (key_id, day, account_id, allowed, refused, rate_limited)
            SELECT key_id, date_trunc('day', hour, 'UTC'), account_id, sum(allowed),
                   sum(refused), sum(rate_limited)
            FROM usage_counters GROUP BY key_id, date_trunc('day', hour, 'UTC'), account_id
            ON CONFLICT (key_id, day) DO UPDATE SET allowed = excluded.allowed,
                refused = excluded.refused, rate_limited = excluded.rate_limited
            """
        )
        await connection.execute(
            """
            INSERT INTO audit_events (id, account_id, actor_key_id, action, target_type,
                                      target_id, details, created_at)
            SELECT gen_random_uuid(), a.id, NULL, 'key.updated', 'api_key', g.n::text,
                   '{"name": {"from": "a", "to": "b"}}'::json, now() - make_interval(mins => g.n)
            FROM accounts a CROSS JOIN generate_series(1, $1) AS g(n)
            """,
            AUDIT_EVENTS,
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


@blocking
async def session_key(url: str) -> str:
    """A console session of the account's owner, as the sign-in makes it."""
    settings = Settings(mode="production", database_url=url, encryption_key=ENCRYPTION_KEY)
    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            owner = (await session.scalars(select(User.id).limit(1))).first()
            assert owner is not None
            key, secret = new_key(
                prefix=settings.key_prefix,
                kind=KeyKind.session,
                name="Console session",
                environment=Environment.live,
                scopes=catalogue(settings.scopes),
                expires_at=utcnow() + timedelta(hours=1),
                user_id=owner,
            )
            session.add(key)
    finally:
        await engine.dispose()
    return secret


def _post(client: httpx.Client, path: str, body: dict[str, object]) -> dict[str, object]:
    response = client.post(path, json=body)
    if response.status_code >= 300:
        raise BenchError(f"POST {path}: {response.status_code} {response.text[:200]}")
    data: dict[str, object] = response.json()
    return data


def pages(api: httpx.Client, url: str) -> list[str]:
    """The console's pages, with the ids of the filled account's objects."""
    applications = api.get("/v1/applications").json()["data"]
    keys = api.get("/v1/keys", params={"limit": 1}).json()["data"]
    endpoints = api.get("/v1/webhooks/endpoints").json()["data"]
    application, key, endpoint = applications[0]["id"], keys[0]["id"], endpoints[0]["id"]
    return [
        "/applications",
        f"/applications/{application}",
        "/keys",
        f"/keys?application_id={application}&environment=live&status=active",
        f"/keys/{key}",
        "/keys/new",
        "/usage",
        "/usage?granularity=day",
        f"/usage?key_id={key}",
        f"/usage?key_id={key}&granularity=day",
        "/webhooks",
        f"/webhooks/{endpoint}",
        f"/webhooks/{endpoint}/deliveries",
        "/members",
        "/personal-keys",
        "/audit",
        "/audit?action=key.updated",
    ]


def measure(admin_url: str, requests: int) -> tuple[list[PageTimes], dict[str, str]]:
    server_cpus, _ = plan_cpus()
    with database(admin_url) as url:
        say(f"bench console: filling {url.rsplit('/', 1)[1]}")
        owner_key = prepare(url)
        # The webhook endpoint's address is a loopback one that nothing is sent to.
        allowed = {"KEYSERVICE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}
        with serve(url, cpus=server_cpus, as_shipped=True, settings=allowed) as server:
            api = httpx.Client(
                base_url=server.base_url,
                headers={"Authorization": f"Bearer {owner_key}"},
                timeout=30,
            )
            with api:
                applications = [
                    _post(
                        api,
                        "/v1/applications",
                        {
                            "name": f"Integration {n + 1}",
                            "developer_email": f"dev{n + 1}@partner.example",
                            "permissions": ["contacts:read", "deals:read"],
                        },
                    )
                    for n in range(APPLICATIONS)
                ]
                for application in applications:
                    create_keys(
                        url,
                        str(application["id"]),
                        KEYS // APPLICATIONS,
                        ["contacts:read"],
                        {"limit": 100, "period_seconds": 1, "burst": 100},
                    )
                _post(
                    api,
                    "/v1/webhooks/endpoints",
                    {"url": "https://127.0.0.1:9/hooks", "event_types": ["key.revoked"]},
                )
                started = time.monotonic()
                fill(url)
                took = time.monotonic() - started
                say(f"bench console: usage and audit rows written in {took:.0f} s")
                paths = pages(api, url)
            secret = session_key(url)
            console = httpx.Client(
                base_url=server.base_url + "/console",
                headers={"Cookie": f"{SESSION_COOKIE}={secret}"},
                timeout=30,
                follow_redirects=False,
            )
            results = []
            with console:
                for path in paths:
                    times, status = [], 0
                    for number in range(requests + 3):
                        began = time.perf_counter()
                        response = console.get(path)
                        elapsed = (time.perf_counter() - began) * 1000
                        status = response.status_code
                        if number >= 3:  # the first few warm the instance's caches
                            times.append(elapsed)
                    results.append(PageTimes(path, status, times))
                    say(f"bench console: {path}: p95 {results[-1].quantile(0.95):.1f} ms")
            rows = {
                "keys": fetch_count(
                    url, "SELECT count(*) FROM api_keys WHERE kind = 'application'"
                ),
                "usage rows": fetch_count(url, "SELECT count(*) FROM usage_counters"),
                "audit events": fetch_count(url, "SELECT count(*) FROM audit_events"),
            }
    return results, rows


@blocking
async def _count(url: str, statement: str) -> int:
    connection = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        return int(await connection.fetchval(statement))
    finally:
        await connection.close()


def fetch_count(url: str, statement: str) -> str:
    return f"{_count(url, statement):,}"


def markdown(results: Sequence[PageTimes], rows: dict[str, str], requests: int) -> str:
    lines = [
        "# Console pages: time per page",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `make bench-console` "
        f"(`python -m bench.console --requests {requests}`), on this machine "
        f"({os.cpu_count()} CPUs), against PostgreSQL.",
        "",
        "The account: " + ", ".join(f"{value} {name}" for name, value in rows.items()) + ". "
        f"keyservice runs as `keyservice serve` starts it (production mode, request log on); "
        f"each page is fetched {requests} times, one request at a time, with a signed-in "
        "session's cookie; the time is from the request to the last byte of the page (the "
        "server's time plus a loopback round trip).",
        "",
        f"Goal: every page under {GOAL_MS:.0f} ms at p95. "
        + (
            "**Met.**"
            if all(r.met for r in results)
            else "**Missed** by: " + ", ".join(r.page for r in results if not r.met) + "."
        ),
        "",
        "| page | status | p50 ms | p95 ms | p99 ms | max ms | goal |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| `{_shown(r.page)}` | {r.status} | {statistics.median(r.times_ms):.1f} | "
            f"{r.quantile(0.95):.1f} | {r.quantile(0.99):.1f} | {max(r.times_ms):.1f} | "
            f"{'met' if r.met else 'missed'} |"
        )
    return "\n".join(lines) + "\n"


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _shown(path: str) -> str:
    """A page's path with its ids as ``{id}``."""
    return UUID_RE.sub("{id}", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--requests", type=int, default=100, help="per page (100)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "console-performance.md")
    args = parser.parse_args(argv)
    admin_url = os.environ.get(
        "KEYSERVICE_BENCH_POSTGRES_URL",
        os.environ.get("KEYSERVICE_TEST_POSTGRES_URL", POSTGRES_URL),
    )
    try:
        results, rows = measure(admin_url, args.requests)
    except BenchError as exc:
        say(f"bench console: {exc}", stream=sys.stderr)
        return 1
    document = markdown(results, rows, args.requests)
    args.output.write_text(document)
    say("\n" + document + f"\nbench console: wrote {args.output}")
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

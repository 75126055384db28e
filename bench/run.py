"""`make bench`: POST /v1/verify under concurrent load, next to a trivial route of the same app,
with rate limiting and usage counting on, and the rate limit's accuracy across two instances.

    python -m bench.run [--seconds 10] [--connections 32] [--loadgen auto|wrk|python] [--check]

One run, about two minutes, all traffic to 127.0.0.1:

1. creates a throw-away PostgreSQL database, migrates it and bootstraps an account;
2. serves bench/server.py (keyservice's app, built and started as in production, plus SQL and
   verification counters) with uvicorn, 1 worker, no access log, log level warning, on a free
   port; with two CPUs or more, the server and the load generator are pinned to different ones;
3. creates an application, a plain key and a hot key (rate limit 1,000,000/s) through the API,
   and 10,000 keys (rate limit 1000/s each) straight in the database; verifies the first two once
   and warms the cache and the rate-limit buckets with the 10,000;
4. runs the phases of ``plan()``, each from a separate process: wrk (``-t1``) where installed (as
   root with apt-get, ``apt-get install -y wrk`` is tried first), else bench/loadgen.py;
5. starts a second instance on the same database and loads one key with a 200/s limit through
   both at once (bench/overload.py), counting the requests admitted against the allowance;
6. prints the results and rewrites docs/performance.md; stops the servers, drops the database.

Goals: the plain cached key keeps at least 80% of the trivial route's requests/s and sends no SQL
on its request path; the hot key keeps at least 75% with at most 20 SQL statements per 1000
verifications (leases and usage flushes alike); across two instances, no request over the
allowance ``burst + rate x elapsed``, and at least 90% of it admitted. Exit status 1 when the run
went wrong (failed requests, unexpected refusals) and, with ``--check``, when a goal is missed.

PostgreSQL: ``KEYSERVICE_BENCH_POSTGRES_URL``, else ``KEYSERVICE_TEST_POSTGRES_URL``, else
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres (a user that may create databases). The
service runs with default settings: the caller's other ``KEYSERVICE_*`` variables are not passed
on (the failed-verification throttle, KEYSERVICE_VERIFY_FAILURES_PER_MINUTE, stays on: only
valid keys are sent). Rate limits are the keys' own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, accuracy, generators, say
from bench.generators import LoadGenerator
from bench.report import Goal, Machine, Report, latency, per_1000
from bench.results import AccuracyResult, Phase, PhaseResult, RouteSummary, Target, summarise
from bench.service import ROOT, Server, admin, create_keys, database, prepare
from keyservice.ratelimit.limiter import RENEW_AHEAD
from keyservice.ratelimit.policy import LONG_LEASE_SECONDS

DEFAULT_OUTPUT = ROOT / "docs" / "performance.md"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

# Phase names: the report groups measured runs by them.
TRIVIAL_PHASE = "trivial"
PLAIN_PHASE = "plain key"
HOT_PHASE = "hot key"
SPREAD_PHASE = "10,000 keys"

# Goals.
PLAIN_RATIO_GOAL = 0.80
# The goal for verifications with rate limiting and usage counting on: the hot key and
# the spread keys alike.
HOT_RATIO_GOAL = 0.75
HOT_SQL_GOAL = 20.0
ADMITTED_FLOOR = 0.90

SPREAD_KEYS = 10_000
KEY_SCOPES = ("contacts:read", "deals:read")
# What the product's gateway would name as the request being verified: counted as usage.
ENDPOINT = "GET /v1/contacts"
# High enough never to refuse under this load: leases and usage counting, never a refusal.
HOT_RATE_LIMIT = {"limit": 1_000_000, "period_seconds": 1, "burst": 1_000_000}
# Each of the 10,000 keys gets about one request a second; this never refuses either.
SPREAD_RATE_LIMIT = {"limit": 1000, "period_seconds": 1, "burst": 1000}
# Modest, so that the accuracy run's load is far over it (the report warns when the requests
# were fewer than twice the allowance).
ACCURACY_RATE_LIMIT = {"limit": 200, "period_seconds": 1, "burst": 50}
ACCURACY_INSTANCES = 2
# The spread keys' warm-up goes on until every key is cached, and until the long leases the keys
# took when first seen become due for renewal (SPREAD_WARMUP_MINIMUM of load), so that the
# measured run renews most of them: more renewals than in steady use, where they spread over a
# long lease's life.
# For at most this many times the measured phase's duration, or that minimum if longer.
SPREAD_WARMUP_FACTOR = 3
SPREAD_WARMUP_MINIMUM = LONG_LEASE_SECONDS * (1 - RENEW_AHEAD)
# In runs of at most this many seconds, each from the first key.
SPREAD_WARMUP_RUN = 5

TRIVIAL = Target("GET", "/healthz")


@dataclass(frozen=True)
class Fixture:
    """The data the phases use."""

    owner_key: str
    application_id: str
    # No rate limit: the cache hit alone.
    key: str
    # HOT_RATE_LIMIT: leases from the shared bucket and usage counting on one key.
    hot_key: str
    # SPREAD_RATE_LIMIT each: the same, spread over many keys.
    spread_keys: tuple[str, ...]


def _owner_headers(owner_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {owner_key}"}


def create_application(server: Server, owner_key: str) -> str:
    response = server.client.post(
        "/v1/applications",
        headers=_owner_headers(owner_key),
        json={
            "name": "Bench",
            "developer_email": "bench@example.com",
            "permissions": ["contacts:read", "contacts:write", "deals:read"],
        },
    )
    if response.status_code != 201:
        raise BenchError(f"creating the application failed: {response.text}")
    return str(response.json()["id"])


def create_key(
    server: Server,
    owner_key: str,
    application_id: str,
    name: str,
    rate_limit: dict[str, int] | None = None,
) -> str:
    """A key of the application, through the API as a customer would create it: its secret."""
    body: dict[str, object] = {"name": name, "scopes": list(KEY_SCOPES)}
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    response = server.client.post(
        f"/v1/applications/{application_id}/keys", headers=_owner_headers(owner_key), json=body
    )
    if response.status_code != 201:
        raise BenchError(f"creating the key {name!r} failed: {response.text}")
    return str(response.json()["key"])


def create_fixture(server: Server, database_url: str, owner_key: str, spread: int) -> Fixture:
    application_id = create_application(server, owner_key)
    key = create_key(server, owner_key, application_id, "Bench key")
    hot_key = create_key(server, owner_key, application_id, "Bench hot key", HOT_RATE_LIMIT)
    say(f"bench: creating {spread:,} keys in the database")
    spread_keys = create_keys(
        database_url,
        application_id,
        spread,
        scopes=KEY_SCOPES,
        rate_limit=SPREAD_RATE_LIMIT,
    )
    return Fixture(
        owner_key=owner_key,
        application_id=application_id,
        key=key,
        hot_key=hot_key,
        spread_keys=tuple(spread_keys),
    )


def verify_body(key: str, *, endpoint: str | None = None) -> str:
    body: dict[str, object] = {"key": key, "scopes": ["contacts:read"]}
    if endpoint is not None:
        body["endpoint"] = endpoint
    return json.dumps(body, ensure_ascii=False)


def check_verifies(server: Server, body: str) -> None:
    """Verify once, so that the load finds the key cached; and check that it verifies."""
    response = server.client.post(
        "/v1/verify", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    if response.status_code != 200 or response.json().get("code") != "VALID":
        raise BenchError(f"a bench key does not verify: {response.status_code} {response.text}")


@dataclass(frozen=True)
class Plan:
    """The warm-ups, the spread keys' target (warmed by ``warm_spread()``) and the measured
    phases, in order."""

    warmups: list[Phase]
    spread: Target
    measured: list[Phase]


def warmup_name(phase: str) -> str:
    return f"warm-up: {phase}"


def plan(fixture: Fixture, *, seconds: int, warmup: int) -> Plan:
    """The trivial route runs first and last, and ratios use the mean of both, so that a machine
    slowing down or speeding up meanwhile cancels out."""
    plain = Target("POST", "/v1/verify", (verify_body(fixture.key),))
    hot = Target("POST", "/v1/verify", (verify_body(fixture.hot_key, endpoint=ENDPOINT),))
    spread = Target(
        "POST",
        "/v1/verify",
        tuple(verify_body(key, endpoint=ENDPOINT) for key in fixture.spread_keys),
    )
    return Plan(
        warmups=[
            Phase(warmup_name(TRIVIAL_PHASE), TRIVIAL, warmup, measured=False),
            Phase(warmup_name(PLAIN_PHASE), plain, warmup, measured=False),
            Phase(warmup_name(HOT_PHASE), hot, warmup, measured=False),
        ],
        spread=spread,
        measured=[
            Phase(TRIVIAL_PHASE, TRIVIAL, seconds),
            Phase(PLAIN_PHASE, plain, seconds),
            Phase(HOT_PHASE, hot, seconds),
            Phase(SPREAD_PHASE, spread, seconds),
            Phase(TRIVIAL_PHASE, TRIVIAL, seconds),
        ],
    )


def run_phase(server: Server, generator: LoadGenerator, phase: Phase) -> PhaseResult:
    say(f"bench: {phase.name}: {phase.target.route} for {phase.seconds} s")
    before = server.counters()
    server_cpu = server.cpu_seconds()
    load, loadgen_cpu = generator.run(phase.target, server.port, phase.seconds)
    # Once the load generator has exited and the server has answered what it left in flight.
    server.settle()
    server_cpu_after = server.cpu_seconds()
    counters = server.counters() - before
    return PhaseResult(
        phase=phase,
        load=load,
        counters=counters,
        server_cpu_seconds=(
            None
            if server_cpu is None or server_cpu_after is None
            else server_cpu_after - server_cpu
        ),
        loadgen_cpu_seconds=loadgen_cpu,
    )


def _spread_budget(seconds: int) -> float:
    return max(SPREAD_WARMUP_FACTOR * seconds, SPREAD_WARMUP_MINIMUM)


def warm_spread(
    server: Server, generator: LoadGenerator, target: Target, *, budget: float, minimum: float
) -> tuple[list[PhaseResult], int]:
    """Warm-up runs over the spread keys, each from the first key, until every key is cached
    (with its bucket) and ``minimum`` seconds are spent, or ``budget`` seconds are: the results
    and how many keys, from the first, are warm.

    A key's first verification costs a lookup and creates its bucket row; the measured run, which
    starts again from the first key, should find its keys warm, as keys in steady use are. Each
    run goes over the keys warmed already before it reaches new ones, as such keys' traffic would:
    their leases are as fresh as in steady use, not expired. When the server verifies too few
    keys a second for all of them to be warmed in the budget, the measured run goes no further
    than the warm-up did, as long as it is not much faster; its lookups (SQL other than leases and
    usage flushes) show whether it did."""
    cached_before = server.cache_entries()
    total = len(target.bodies)
    warm, spent = 0, 0.0
    results: list[PhaseResult] = []
    while (warm < total or spent < minimum) and spent < budget:
        seconds = max(1, min(SPREAD_WARMUP_RUN, math.ceil(budget - spent)))
        warmup = Phase(warmup_name(SPREAD_PHASE), target, seconds, measured=False)
        result = run_phase(server, generator, warmup)
        results.append(result)
        spent += result.load.seconds
        # wrk sends the bodies in turn: the keys verified so far are the first ones.
        warm = min(total, server.cache_entries() - cached_before)
    return results, warm


def run_accuracy(
    server: Server,
    database_url: str,
    fixture: Fixture,
    *,
    connections: int,
    seconds: int,
    cpus: tuple[frozenset[int] | None, frozenset[int] | None],
) -> AccuracyResult:
    """A key with ACCURACY_RATE_LIMIT, not verified before, loaded through ``server`` and a
    second instance on the same database at once."""
    key = create_key(
        server, fixture.owner_key, fixture.application_id, "Bench limited key", ACCURACY_RATE_LIMIT
    )
    server_cpus, loadgen_cpus = cpus
    with Server(database_url, cpus=server_cpus) as other:
        say(f"bench: second instance on {other.base_url}")
        return accuracy.measure(
            [server, other],
            verify_body(key, endpoint=ENDPOINT),
            rate_limit=ACCURACY_RATE_LIMIT,
            connections=max(1, connections // ACCURACY_INSTANCES),
            seconds=seconds,
            cpus=loadgen_cpus,
        )


def _ratio(summaries: dict[str, RouteSummary], name: str) -> float:
    return summaries[name].rps / summaries[TRIVIAL_PHASE].rps


def _per_1000(summary: RouteSummary, count: int) -> float:
    value = summary.per_1000_verifications(count)
    if value is None:
        raise BenchError(f"the {summary.name} phase verified nothing")
    return value


def goals(summaries: dict[str, RouteSummary], accuracy: AccuracyResult) -> list[Goal]:
    plain, hot = summaries[PLAIN_PHASE], summaries[HOT_PHASE]
    plain_ratio, hot_ratio = _ratio(summaries, PLAIN_PHASE), _ratio(summaries, HOT_PHASE)
    spread_ratio = _ratio(summaries, SPREAD_PHASE)
    plain_counters = plain.counters
    plain_path = _per_1000(plain, plain_counters.sql_statements - plain_counters.sql_flush)
    plain_flush = _per_1000(plain, plain_counters.sql_flush)
    hot_sql = _per_1000(hot, hot.counters.sql_statements)
    return [
        Goal(
            "plain key: verify/trivial requests/s",
            f"{plain_ratio:.2f}",
            f"at least {PLAIN_RATIO_GOAL:.2f}",
            plain_ratio >= PLAIN_RATIO_GOAL,
        ),
        Goal(
            "plain key: SQL statements per 1000 verifications on the request path",
            f"{per_1000(plain_path)} (usage flushes, in the background: {per_1000(plain_flush)})",
            "0, no SQL on a cache hit",
            plain_path == 0,
        ),
        Goal(
            "hot key: verify/trivial requests/s",
            f"{hot_ratio:.2f}",
            f"at least {HOT_RATIO_GOAL:.2f}",
            hot_ratio >= HOT_RATIO_GOAL,
        ),
        Goal(
            f"{SPREAD_PHASE}: verify/trivial requests/s",
            f"{spread_ratio:.2f}",
            f"at least {HOT_RATIO_GOAL:.2f}",
            spread_ratio >= HOT_RATIO_GOAL,
        ),
        Goal(
            "hot key: SQL statements per 1000 verifications (leases and usage flushes)",
            per_1000(hot_sql),
            f"at most {HOT_SQL_GOAL:.0f}",
            hot_sql <= HOT_SQL_GOAL,
        ),
        Goal(
            f"{accuracy.instances} instances: requests admitted over the allowance",
            f"{max(0.0, accuracy.over):,.0f} ({accuracy.admitted:,} admitted, allowance "
            f"{accuracy.allowance:,.1f})",
            "0",
            accuracy.over <= 0,
        ),
        Goal(
            f"{accuracy.instances} instances: admitted/allowance under steady over-limit load",
            f"{accuracy.ratio:.3f}",
            f"at least {ADMITTED_FLOOR:.2f}",
            accuracy.ratio >= ADMITTED_FLOOR,
        ),
    ]


def plan_cpus(pin: bool) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """CPUs for the server and for the load generator (the last one), when there are two."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return frozenset(cpus[:-1]), frozenset(cpus[-1:])


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


def _limit(rate_limit: dict[str, int]) -> str:
    period = rate_limit["period_seconds"]
    per = "s" if period == 1 else f"{period} s"
    return f"{rate_limit['limit']:,}/{per}, burst {rate_limit['burst']:,}"


# Above this share of leases per verification, nearly every verification takes one.
MOSTLY = 0.5


def observations(summaries: dict[str, RouteSummary], accuracy: AccuracyResult) -> list[str]:
    """What the counters say about leases, from this run's numbers."""
    plain, hot, spread = summaries[PLAIN_PHASE], summaries[HOT_PHASE], summaries[SPREAD_PHASE]
    hot_seconds = sum(r.load.seconds for r in hot.runs)
    hot_leases = _per_1000(hot, hot.counters.leases_taken)
    lines = [
        f"Hot key: {hot.counters.leases_taken / hot_seconds:.1f} leases a second "
        f"({per_1000(hot_leases)} per 1000 verifications); p99 {latency(hot.p99_ms)} against "
        f"{latency(plain.p99_ms)} for the plain key, which takes none.",
    ]
    spread_leases = _per_1000(spread, spread.counters.leases_taken)
    spread_cpu, hot_cpu = spread.server_cpu_us_per_request, hot.server_cpu_us_per_request
    line = (
        f"{SPREAD_PHASE}: {per_1000(spread_leases)} leases (taken together, in "
        f"{per_1000(_per_1000(spread, spread.counters.sql_lease))} statements) and "
        f"{per_1000(_per_1000(spread, spread.counters.checkouts))} connection checkouts per 1000 "
        "verifications"
    )
    if spread_cpu is not None and hot_cpu is not None:
        line += (
            f", {spread_cpu:,.0f} µs of server CPU per verification against {hot_cpu:,.0f} µs "
            "for the hot key"
        )
    if spread_leases >= MOSTLY * 1000:
        line += (
            ": nearly every verification took a lease (its key idle for longer than a lease lives)"
        )
    lines.append(line + ".")
    lines.append(
        "Garbage collection: "
        + "; ".join(
            f"{name}, {summary.counters.gc_pause_us / 1000:,.0f} ms of pauses "
            f"({summary.counters.gc_full_collections} full collections)"
            for name, summary in ((HOT_PHASE, hot), (SPREAD_PHASE, spread))
        )
        + "."
    )
    load = accuracy.load
    refused = load.codes.get("RATE_LIMITED", 0)
    if load.requests and refused:
        leases = accuracy.counters.leases_taken
        lines.append(
            f"Accuracy run: {leases / load.requests * 1000:,.0f} leases per 1000 requests, "
            f"{refused / load.requests * 1000:,.0f} per 1000 refused: requests over the limit "
            + (
                "mostly take a lease of their own rather than being refused from memory"
                if leases - accuracy.admitted >= MOSTLY * refused
                else "are mostly refused from memory, without a lease"
            )
            + f"; the instances answered {load.requests / load.seconds:,.0f} requests/s for the "
            "key, together."
        )
    return lines


def spread_lines(
    results: Sequence[PhaseResult], summaries: dict[str, RouteSummary], keys: int, warm: int
) -> tuple[str, list[str]]:
    """How far the spread keys' warm-up and measured run went: a setup line, and warnings."""
    warmup = sum(r.load.seconds for r in results if r.phase.name == warmup_name(SPREAD_PHASE))
    measured = summaries[SPREAD_PHASE]
    verified = measured.counters.verifications
    line = (
        f"{keys:,} keys, how far: {warm:,} cached (with their buckets) by {warmup:.0f} s of "
        f"warm-up; the measured run verified {verified:,} times, "
        + (
            f"so each of its first {verified:,} keys once (it starts again from the first key)"
            if verified < keys
            else f"each key {verified / keys:.1f} times on average"
        )
    )
    warnings = []
    lookups = measured.counters.sql_other
    if lookups:
        warnings.append(
            f"{SPREAD_PHASE}: the measured run sent {lookups:,} statements other than leases and "
            "usage flushes: keys it verified were not all cached (it went further than the warm-up)"
        )
    return line, warnings


def setup_lines(
    args: argparse.Namespace,
    plan: Plan,
    accuracy: AccuracyResult,
    cpus: tuple[frozenset[int] | None, frozenset[int] | None],
) -> list[str]:
    server_cpus, loadgen_cpus = cpus
    pinning = (
        f"server pinned to CPU {_cpus(server_cpus)}, load generator to CPU {_cpus(loadgen_cpus)}"
        if server_cpus and loadgen_cpus
        else "not pinned"
    )
    measured = ", ".join(p.name for p in plan.measured)
    return [
        "Server: bench/server.py under uvicorn, 1 worker, `--no-access-log --log-level "
        "warning`, on 127.0.0.1: keyservice's app built as in production (`create_app(settings)`, "
        "default settings), whose lifespan opens the engine and runs the key invalidation "
        "listener and the usage flusher (every second), plus statement and verification counters",
        f"CPUs: {pinning} (the accuracy run's two instances share the server's)",
        f"Phases: {args.warmup} s warm-up of each route (the {len(plan.spread.bodies):,} keys: "
        f"right before their measured run, until all are cached and for at least "
        f"{SPREAD_WARMUP_MINIMUM:g} s, when the long leases they took when first seen become due "
        f"for renewal, so that the measured run renews most of them, for at most "
        f"{_spread_budget(args.seconds):g} s), then "
        f"{measured}: {args.seconds} s each, "
        f"{args.connections} connections",
        'Trivial route: `GET /healthz`, a constant pydantic model (`{"status":"ok"}`)',
        f"Plain key: `POST /v1/verify` with `{verify_body('ks_live_…')}`: an application's key "
        "without rate limit, valid for the scope, already cached (verified once before the load); "
        "its usage is counted too (endpoint `unspecified`)",
        f"Hot key: `{verify_body('ks_live_…', endpoint=ENDPOINT)}`, one key with a rate limit of "
        f"{_limit(HOT_RATE_LIMIT)} (never refusing under this load): tokens leased from its "
        "shared bucket, usage counted by endpoint",
        f"{len(plan.spread.bodies):,} keys: the same body, in turn over {len(plan.spread.bodies):,}"
        f" keys of the application with {_limit(SPREAD_RATE_LIMIT)} each, created straight in "
        "the database (`keyservice.keys.service.new_key`); the measured run starts from the first "
        "key, as the warm-up did, so that it finds its keys cached and their buckets created",
        f"Accuracy: {accuracy.instances} instances of bench/server.py on the same database, one "
        f"key with {_limit(ACCURACY_RATE_LIMIT)} (not verified before), loaded through both at "
        f"once for {args.seconds} s by bench/overload.py ({accuracy.load.connections} "
        "connections in all, pinned like the load generator), which reads every answer's `code` "
        "and waits for the requests in flight at the end; allowance = burst + rate x elapsed, "
        "elapsed from the first request sent to the last answer",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=10, help="each measured phase (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up of each route (2)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (32)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-install", action="store_true", help="do not try to install wrk")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="the report (docs/performance.md)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    # Bounded, so that one run stays within a couple of minutes.
    if not 1 <= args.seconds <= 30 or not 1 <= args.warmup <= 10:
        parser.error("--seconds must be within 1-30 and --warmup within 1-10")
    if not 1 <= args.connections <= 512:
        parser.error("--connections must be within 1-512")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url = os.environ.get(
        "KEYSERVICE_BENCH_POSTGRES_URL",
        os.environ.get("KEYSERVICE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
    )
    cpus = server_cpus, loadgen_cpus = plan_cpus(not args.no_pin)
    try:
        generator = generators.choose(
            args.loadgen,
            connections=args.connections,
            cpus=loadgen_cpus,
            install=not args.no_install,
        )
        postgres_version = admin(admin_url, "SHOW server_version")
        with database(admin_url) as url:
            say(f"bench: migrating and bootstrapping {url.rsplit('/', 1)[1]}")
            owner_key = prepare(url)
            with Server(url, cpus=server_cpus) as server:
                say(f"bench: serving on {server.base_url}; load from {generator.name}")
                fixture = create_fixture(server, url, owner_key, SPREAD_KEYS)
                phases = plan(fixture, seconds=args.seconds, warmup=args.warmup)
                for phase in phases.warmups:
                    if phase.target.bodies:
                        check_verifies(server, phase.target.bodies[0])
                results = [run_phase(server, generator, phase) for phase in phases.warmups]
                warm = 0
                for phase in phases.measured:
                    if phase.name == SPREAD_PHASE:
                        # Right before the measured run: its keys in steady use, not idle.
                        warmups, warm = warm_spread(
                            server,
                            generator,
                            phases.spread,
                            budget=_spread_budget(args.seconds),
                            minimum=SPREAD_WARMUP_MINIMUM,
                        )
                        results += warmups
                    results.append(run_phase(server, generator, phase))
                accuracy = run_accuracy(
                    server,
                    url,
                    fixture,
                    connections=args.connections,
                    seconds=args.seconds,
                    cpus=cpus,
                )
        summaries = summarise(results)
        spread_line, spread_warnings = spread_lines(
            results, summaries, len(phases.spread.bodies), warm
        )
        report = Report(
            date=dt.datetime.now(dt.UTC),
            machine=Machine.here(postgres_version),
            generator=generator.describe(),
            setup=[*setup_lines(args, phases, accuracy, cpus), spread_line],
            scenario_warnings=spread_warnings,
            observations=observations(summaries, accuracy),
            results=results,
            summaries=summaries,
            baseline=TRIVIAL_PHASE,
            accuracy=accuracy,
            goals=goals(summaries, accuracy),
        )
    except BenchError as exc:
        say(f"bench: {exc}", stream=sys.stderr)
        return 1
    say(report.console())
    args.output.write_text(report.markdown())
    say(f"\nbench: wrote {args.output}")
    if report.problems:
        return 1
    if args.check and not all(goal.met for goal in report.goals):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

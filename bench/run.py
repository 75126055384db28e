"""`make bench`: POST /v1/verify under concurrent load next to a trivial route of the same app,
with rate limiting and usage counting on; the same as shipped; and a rate limit's accuracy
across two instances. What it does and why: bench/README.md.

    python -m bench.run [--seconds 10] [--output docs/performance.md] [--check]

Exit status 1 when the run went wrong (failed requests, verifications refused where none should
be, counts that disagree) and, with ``--check``, when a goal is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, accuracy, fanout, say, wrk
from bench.database import create_keys, database, fetch, prepare, usage
from bench.instance import ROOT, Server, serve
from bench.report import Goal, Report, Run, Summary, latency, machine, per_1000, summarise
from keyservice.ratelimit.limiter import RENEW_AHEAD
from keyservice.ratelimit.policy import LONG_LEASE_SECONDS

POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
# The parts of a run (--only): /v1/verify and its rate limits, and the webhook fan-out.
VERIFY = "verify"
FANOUT = "fanout"
WARMUP_SECONDS = 2
CONNECTIONS = 32

# Phase names: the report groups measured runs by them.
TRIVIAL = "trivial"
PLAIN = "plain key"
HOT = "hot key"
SPREAD = "10,000 keys"
SHIPPED = "as shipped"
QUIET = "logs and metrics off"
# Each as a user may start it: keyservice serve as shipped (production: a JSON line per request,
# metrics on), and with both off (log level warning, KEYSERVICE_METRICS_ENABLED=false).
APART = {
    SHIPPED: ({}, ()),
    QUIET: ({"KEYSERVICE_METRICS_ENABLED": "false"}, ("--log-level", "warning")),
}
# What the request's log line and the metrics may cost, against both off, in one run.
SHIPPED_RATIO_FLOOR = 0.95
METRICS_RATIO_FLOOR = 0.97

PLAIN_RATIO_GOAL = 0.80
# For verifications with rate limiting and usage counting on: the hot key and the spread keys.
HOT_RATIO_GOAL = 0.75
HOT_SQL_GOAL = 20.0
ADMITTED_FLOOR = 0.90

SPREAD_KEYS = 10_000
KEY_SCOPES = ["contacts:read", "deals:read"]
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
# The spread keys' warm-up goes on until every key is cached and until the long leases the keys
# took when first seen become due for renewal, so that the measured run renews most of them:
# more renewals than in steady use, where they spread over a long lease's life. For at most
# SPREAD_WARMUP_FACTOR times the measured phase, or that minimum if longer; in runs of at most
# SPREAD_WARMUP_RUN seconds, each from the first key.
SPREAD_WARMUP_MINIMUM = LONG_LEASE_SECONDS * (1 - RENEW_AHEAD)
SPREAD_WARMUP_FACTOR = 3
SPREAD_WARMUP_RUN = 5
# Above this share of leases per verification, nearly every verification takes one.
MOSTLY = 0.5


@dataclass(frozen=True)
class Phase:
    """One wrk run: GET ``path``, or POST ``bodies`` to it in turn, one per request."""

    name: str
    path: str
    bodies: tuple[str, ...]
    seconds: int
    measured: bool = True

    @property
    def route(self) -> str:
        return f"{'POST' if self.bodies else 'GET'} {self.path}"

    def warmup(self, seconds: int) -> Phase:
        return dataclasses.replace(
            self, name=f"warm-up: {self.name}", seconds=seconds, measured=False
        )


def run_phase(server: Server, phase: Phase, cpus: frozenset[int] | None) -> Run:
    say(f"bench: {phase.name}: {phase.route} for {phase.seconds} s")
    before = server.counters() if server.counted else None
    cpu = server.cpu_seconds()
    [load], wrk_cpu = wrk.run(
        [server.base_url + phase.path],
        phase.bodies,
        seconds=phase.seconds,
        connections=CONNECTIONS,
        cpus=cpus,
    )
    server.settle()
    counters = None if before is None else server.counters() - before
    cpu = server.cpu_seconds() - cpu
    return Run(phase.name, phase.route, phase.measured, load, counters, cpu, wrk_cpu)


def verify_body(key: str, endpoint: str | None = None) -> str:
    body: dict[str, object] = {"key": key, "scopes": ["contacts:read"]}
    return json.dumps(body | ({"endpoint": endpoint} if endpoint else {}), ensure_ascii=False)


def check_verifies(server: Server, body: str) -> None:
    """Verify once, so that the load finds the key cached; and check that it verifies."""
    response = server.client.post(
        "/v1/verify", content=body, headers={"Content-Type": "application/json"}
    )
    if response.status_code != 200 or response.json().get("code") != "VALID":
        raise BenchError(f"a bench key does not verify: {response.status_code} {response.text}")


def api(server: Server, owner_key: str, path: str, body: Mapping[str, object]) -> dict[str, str]:
    """POST to the management API as the account's owner: what it created."""
    response = server.client.post(path, headers={"Authorization": f"Bearer {owner_key}"}, json=body)
    if response.status_code != 201:
        raise BenchError(f"POST {path} failed: {response.text}")
    created: dict[str, str] = response.json()
    return created


def create_key(
    server: Server, owner_key: str, application: str, name: str, rate_limit: object = None
) -> dict[str, str]:
    """A key of the application, created through the API as a customer would: its id, its
    secret (``key``) and the rest."""
    body = {"name": name, "scopes": KEY_SCOPES, "rate_limit": rate_limit}
    return api(server, owner_key, f"/v1/applications/{application}/keys", body)


def plan(server: Server, url: str, owner_key: str, seconds: int) -> tuple[str, list[Phase]]:
    """The application, and the measured phases in order: the trivial route runs first and last,
    and ratios use the mean of both, so that a machine slowing down or speeding up meanwhile
    cancels out."""
    permissions = ["contacts:read", "contacts:write", "deals:read"]
    body = {"name": "Bench", "developer_email": "bench@example.com", "permissions": permissions}
    application = api(server, owner_key, "/v1/applications", body)["id"]
    plain = verify_body(create_key(server, owner_key, application, "Bench key")["key"])
    hot_key = create_key(server, owner_key, application, "Bench hot key", HOT_RATE_LIMIT)
    hot = verify_body(hot_key["key"], ENDPOINT)
    say(f"bench: creating {SPREAD_KEYS:,} keys in the database")
    spread = create_keys(url, application, SPREAD_KEYS, KEY_SCOPES, SPREAD_RATE_LIMIT)
    trivial = Phase(TRIVIAL, "/healthz", (), seconds)
    return application, [
        trivial,
        Phase(PLAIN, "/v1/verify", (plain,), seconds),
        Phase(HOT, "/v1/verify", (hot,), seconds),
        Phase(SPREAD, "/v1/verify", tuple(verify_body(k, ENDPOINT) for k in spread), seconds),
        trivial,
    ]


def spread_budget(seconds: int) -> float:
    return max(SPREAD_WARMUP_FACTOR * seconds, SPREAD_WARMUP_MINIMUM)


def warm_spread(
    server: Server, spread: Phase, cpus: frozenset[int] | None
) -> tuple[list[Run], int]:
    """Warm-up runs over the spread keys, each from the first key, until every key is cached
    (with its bucket) and SPREAD_WARMUP_MINIMUM seconds are spent, or the budget is: the runs,
    and how many keys from the first are warm.

    A key's first verification costs a lookup and creates its bucket row; the measured run, which
    starts again from the first key, should find its keys as keys in steady use are: cached, with
    leases as fresh as their traffic keeps them, which each run renews by going over the keys
    warmed already before it reaches new ones. When the server verifies too few keys a second for
    all of them to be warmed in the budget, the measured run goes no further than the warm-up
    did, as long as it is not much faster; its lookups (other SQL) show whether it did."""
    cached_before = server.counters().cache_entries
    budget = spread_budget(spread.seconds)
    warm, spent, runs = 0, 0.0, []
    while (warm < len(spread.bodies) or spent < SPREAD_WARMUP_MINIMUM) and spent < budget:
        run = run_phase(
            server, spread.warmup(min(SPREAD_WARMUP_RUN, math.ceil(budget - spent))), cpus
        )
        runs.append(run)
        spent += run.load.seconds
        # wrk sends the bodies in turn: the keys verified so far are the first ones.
        warm = min(len(spread.bodies), server.counters().cache_entries - cached_before)
    return runs, warm


def run_apart(
    url: str, phases: list[Phase], cpus: tuple[frozenset[int] | None, ...], label: str
) -> list[Run]:
    """The trivial route and the hot key on an instance started as ``keyservice serve`` starts
    it, with ``APART[label]``'s settings: the requests with what their logging and metrics
    cost."""
    settings, serve_args = APART[label]
    trivial, hot = (dataclasses.replace(p, name=f"{label}: {p.name}") for p in phases[0:3:2])
    with serve(
        url, cpus=cpus[0], as_shipped=True, settings=settings, serve_args=serve_args
    ) as server:
        say(f"bench: {label}: keyservice serve on {server.base_url}")
        check_verifies(server, hot.bodies[0])
        warmups = [trivial.warmup(WARMUP_SECONDS), hot.warmup(WARMUP_SECONDS)]
        return [run_phase(server, phase, cpus[1]) for phase in [*warmups, trivial, hot]]


def _per_1000(summary: Summary, count: int) -> float:
    value = summary.per_1000(count)
    if value is None:
        raise BenchError(f"the {summary.name} phase verified nothing")
    return value


def _at_least(what: str, value: float, goal: float, digits: int = 2) -> Goal:
    return Goal(what, f"{value:.{digits}f}", f"at least {goal:.2f}", value >= goal)


def goals(summaries: dict[str, Summary], result: accuracy.Accuracy) -> list[Goal]:
    trivial, plain, hot = summaries[TRIVIAL], summaries[PLAIN], summaries[HOT]
    plain_flush = _per_1000(plain, plain.counters.sql_flush)
    plain_path = _per_1000(plain, plain.counters.sql_statements) - plain_flush
    hot_sql = _per_1000(hot, hot.counters.sql_statements)
    instances = f"{result.instances} instances"
    return [
        _at_least(f"{PLAIN}: verify/trivial requests/s", plain.rps / trivial.rps, PLAIN_RATIO_GOAL),
        Goal(
            f"{PLAIN}: SQL statements per 1000 verifications on the request path",
            f"{per_1000(plain_path)} (background work: usage flushes, webhook delivery, the "
            f"scheduler: {per_1000(plain_flush)})",
            "0, no SQL on a cache hit",
            plain_path == 0,
        ),
        _at_least(f"{HOT}: verify/trivial requests/s", hot.rps / trivial.rps, HOT_RATIO_GOAL),
        _at_least(
            f"{SPREAD}: verify/trivial requests/s",
            summaries[SPREAD].rps / trivial.rps,
            HOT_RATIO_GOAL,
        ),
        Goal(
            f"{HOT}: SQL statements per 1000 verifications (leases and background work)",
            per_1000(hot_sql),
            f"at most {HOT_SQL_GOAL:.0f}",
            hot_sql <= HOT_SQL_GOAL,
        ),
        Goal(
            f"{instances}: requests admitted over the allowance",
            f"{max(0.0, result.over):,.0f} ({result.admitted:,} admitted, allowance "
            f"{result.allowance:,.1f})",
            "0",
            result.over <= 0,
        ),
        _at_least(
            f"{instances}: admitted/allowance under steady over-limit load",
            result.ratio,
            ADMITTED_FLOOR,
            digits=3,
        ),
    ]


def values(
    seconds: int,
    runs: list[Run],
    summaries: dict[str, Summary],
    warm: int,
    result: accuracy.Accuracy,
    cpus: tuple[frozenset[int] | None, ...],
) -> dict[str, str]:
    """The report's template's values but for the tables: the setup, how far the spread keys'
    warm-up and measured run went, and what the counters say about leases and the garbage
    collector."""
    plain, hot, spread = summaries[PLAIN], summaries[HOT], summaries[SPREAD]
    server_cpus, wrk_cpus = (",".join(map(str, sorted(c))) if c else "" for c in cpus)
    pinned = f"server pinned to CPU {server_cpus}, load generator to CPU {wrk_cpus}"
    spread_warmup = sum(r.load.seconds for r in runs if r.phase == f"warm-up: {SPREAD}")
    hot_seconds = sum(r.load.seconds for r in hot.runs)
    verified = spread.verifications
    per_key = (
        f"so each of its first {verified:,} keys once (it starts again from the first key)"
        if verified < SPREAD_KEYS
        else f"each key {verified / SPREAD_KEYS:.1f} times on average"
    )
    spread_leases = _per_1000(spread, spread.counters.leases_taken)
    lease_each = (
        ": nearly every verification took a lease (its key idle for longer than a lease lives)"
    )
    leases, requests = result.counters.leases_taken, result.requests
    refusals = (
        "mostly take a lease of their own rather than being refused from memory"
        if leases - result.admitted >= MOSTLY * result.refused
        else "are mostly refused from memory, without a lease"
    )
    return {
        "wrk_version": wrk.version(),
        "connections": str(CONNECTIONS),
        "cpus": pinned if server_cpus else "not pinned (one CPU)",
        "warmup": str(WARMUP_SECONDS),
        "spread_minimum": f"{SPREAD_WARMUP_MINIMUM:g}",
        "spread_budget": f"{spread_budget(seconds):g}",
        "seconds": str(seconds),
        "plain_body": verify_body("ks_live_…"),
        "hot_body": verify_body("ks_live_…", ENDPOINT),
        "hot_limit": accuracy.limit_text(HOT_RATE_LIMIT),
        "spread_limit": accuracy.limit_text(SPREAD_RATE_LIMIT),
        "accuracy_limit": accuracy.limit_text(ACCURACY_RATE_LIMIT),
        "accuracy_connections": str(result.connections),
        "spread_warm": f"{warm:,}",
        "spread_warmup": f"{spread_warmup:.0f}",
        "spread_verified": f"{verified:,}",
        "spread_per_key": per_key,
        "hot_leases_per_second": f"{hot.counters.leases_taken / hot_seconds:.1f}",
        "hot_leases": per_1000(_per_1000(hot, hot.counters.leases_taken)),
        "hot_p99": latency(hot.p99_ms),
        "plain_p99": latency(plain.p99_ms),
        "spread_leases": per_1000(spread_leases),
        "spread_lease_statements": per_1000(_per_1000(spread, spread.counters.sql_lease)),
        "spread_checkouts": per_1000(_per_1000(spread, spread.counters.checkouts)),
        "spread_cpu": f"{spread.server_cpu_us_per_request:,.0f}",
        "hot_cpu": f"{hot.server_cpu_us_per_request:,.0f}",
        "spread_lease_each": lease_each if spread_leases >= MOSTLY * 1000 else "",
        "hot_gc_ms": f"{hot.counters.gc_pause_us / 1000:,.0f}",
        "hot_gc_full": str(hot.counters.gc_full_collections),
        "spread_gc_ms": f"{spread.counters.gc_pause_us / 1000:,.0f}",
        "spread_gc_full": str(spread.counters.gc_full_collections),
        "accuracy_leases": f"{leases / requests * 1000:,.0f}",
        "accuracy_refused": f"{result.refused / requests * 1000:,.0f}",
        "accuracy_refusals": refusals,
        "accuracy_rps": f"{requests / result.elapsed:,.0f}",
    }


def apart_goals(summaries: Mapping[str, Summary], apart: list[Run]) -> list[Goal]:
    """The shipped configuration, and metrics alone, against both off: hot key/trivial ratios
    of instances measured one after the other in this run."""
    runs = summarise(apart)

    def ratio(label: str) -> float:
        return runs[f"{label}: {HOT}"].rps / runs[f"{label}: {TRIVIAL}"].rps

    quiet = ratio(QUIET)
    metrics_on = summaries[HOT].rps / summaries[TRIVIAL].rps
    return [
        _at_least(
            f"{SHIPPED} (`keyservice serve`: a JSON line per request, metrics on): hot key/"
            f"trivial {ratio(SHIPPED):.2f} against {quiet:.2f} with {QUIET}, as a share",
            ratio(SHIPPED) / quiet,
            SHIPPED_RATIO_FLOOR,
        ),
        _at_least(
            f"metrics on (the bench's server, no request log): hot key/trivial "
            f"{metrics_on:.2f} against {quiet:.2f} with {QUIET}, as a share",
            metrics_on / quiet,
            METRICS_RATIO_FLOOR,
        ),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=int, default=10, help="each measured phase (10)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument(
        "--only",
        choices=[VERIFY, FANOUT],
        help="run one part: `verify` (rewrites the document but its fan-out section) or "
        "`fanout` (rewrites only that section); both by default",
    )
    args = parser.parse_args(argv)
    # Bounded, so that one run stays within a few minutes.
    if not 1 <= args.seconds <= 30:
        parser.error("--seconds must be within 1-30")
    return args


def plan_cpus() -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """CPUs for the server and for the load generator (the last one), when there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    return (frozenset(cpus[:-1]), frozenset(cpus[-1:])) if len(cpus) > 1 else (None, None)


def measure(admin_url: str, seconds: int, cpus: tuple[frozenset[int] | None, ...]) -> Report:
    server_cpus, wrk_cpus = cpus
    with database(admin_url) as url:
        say(f"bench: migrating and bootstrapping {url.rsplit('/', 1)[1]}")
        owner_key = prepare(url)
        with serve(url, cpus=server_cpus) as server:
            say(f"bench: serving on {server.base_url}")
            application, phases = plan(server, url, owner_key, seconds)
            for phase in phases[1:3]:
                check_verifies(server, phase.bodies[0])
            runs = [run_phase(server, p.warmup(WARMUP_SECONDS), wrk_cpus) for p in phases[:3]]
            for phase in phases:
                if phase.name == SPREAD:
                    # Right before the measured run: its keys in steady use, not idle.
                    warmups, warm = warm_spread(server, phase, wrk_cpus)
                    runs += warmups
                runs.append(run_phase(server, phase, wrk_cpus))
            apart = [run for label in APART for run in run_apart(url, phases, cpus, label)]
            key = create_key(
                server, owner_key, application, "Bench limited key", ACCURACY_RATE_LIMIT
            )
            with serve(url, cpus=server_cpus) as other:
                say(f"bench: second instance on {other.base_url}")
                result = accuracy.measure(
                    [server, other],
                    verify_body(key["key"], ENDPOINT),
                    rate_limit=ACCURACY_RATE_LIMIT,
                    connections=CONNECTIONS // ACCURACY_INSTANCES,
                    seconds=seconds,
                    cpus=wrk_cpus,
                )
        # Both instances stopped: their last usage flush is written.
        result = dataclasses.replace(result, usage=usage(url, key["id"]))
    summaries = summarise(runs)
    lookups = summaries[SPREAD].counters.sql_other
    lookups_warning = (
        f"{SPREAD}: the measured run sent {lookups:,} statements other than leases and usage "
        "flushes: keys it verified were not all cached (it went further than the warm-up)"
    )
    return Report(
        runs=runs + apart,
        summaries=summaries,
        baseline=TRIVIAL,
        goals=goals(summaries, result) + apart_goals(summaries, apart),
        accuracy=result,
        results=[],
        values=values(seconds, runs, summaries, warm, result, cpus)
        | machine(fetch(admin_url, "SHOW server_version")[0]),
        scenario_warnings=[lookups_warning] if lookups else [],
    )


def measure_fanout(
    admin_url: str, seconds: int, cpus: tuple[frozenset[int] | None, ...]
) -> fanout.Result:
    """The webhook fan-out on a database of its own (bench/fanout.py)."""
    server_cpus, receiver_cpus = cpus
    with database(admin_url) as url:
        say(f"bench: fan-out: migrating and bootstrapping {url.rsplit('/', 1)[1]}")
        owner_key = prepare(url)
        return fanout.measure(admin_url, url, owner_key, seconds, (server_cpus, receiver_cpus))


def command(argv: list[str] | None) -> str:
    given = " ".join(sys.argv[1:] if argv is None else argv)
    return f'make bench BENCH_ARGS="{given}"' if given else "make bench"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url = os.environ.get(
        "KEYSERVICE_BENCH_POSTGRES_URL",
        os.environ.get("KEYSERVICE_TEST_POSTGRES_URL", POSTGRES_URL),
    )
    cpus = plan_cpus()
    report = result = None
    try:
        if args.only != FANOUT:
            wrk.executable()
            report = measure(admin_url, args.seconds, cpus)
        if args.only != VERIFY:
            result = measure_fanout(admin_url, args.seconds, cpus)
    except BenchError as exc:
        say(f"bench: {exc}", stream=sys.stderr)
        return 1
    # The part not run keeps what the document said of it.
    kept = fanout.existing_section(args.output)
    if report is not None:
        document = report.markdown()
    else:
        document = args.output.read_text() if args.output.exists() else "# Performance\n"
    if result is not None:
        date = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        machine_values = machine(fetch(admin_url, "SHOW server_version")[0])
        kept = fanout.section(result, command=command(argv), date=date, machine=machine_values)
    if kept is not None:
        document = fanout.replace_section(document, kept)
    args.output.write_text(document)
    if report is not None:
        say("\n".join(["", report.results_section(), *report.notes()]))
    if result is not None:
        say("\n" + fanout.summary(result))
        say("\n".join(f"- Problem: {problem}" for problem in result.problems))
    say(f"\nbench: wrote {args.output}")
    problems = (report.problems if report is not None else []) + (
        result.problems if result is not None else []
    )
    if problems:
        return 1
    met = (report is None or all(goal.met for goal in report.goals)) and (
        result is None or all(met for _, met in fanout.goals(result))
    )
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())

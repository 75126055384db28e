"""`make bench`: POST /v1/verify under concurrent load, next to a trivial route of the same app.

    python -m bench.run [--seconds 10] [--connections 32] [--loadgen auto|wrk|python] [--check]

One run, about a minute, all traffic to 127.0.0.1:

1. creates a throw-away PostgreSQL database, migrates it and bootstraps an account;
2. serves bench/server.py (keyservice's app plus SQL and verification counters) with uvicorn,
   1 worker, no access log, log level warning, on a free port; with two CPUs or more, the server
   and the load generator are pinned to different ones;
3. creates an application and a key through the API and verifies the key once, so that the load
   hits the verification cache;
4. runs the phases of ``plan()``, each from a separate process: wrk (``-t1``) where installed (as
   root with apt-get, ``apt-get install -y wrk`` is tried first), else bench/loadgen.py;
5. prints the results and rewrites docs/performance.md; stops the server, drops the database.

Goals: verify keeps at least 80% of the trivial route's requests/s; a cache hit sends no SQL.
Exit status 1 when the run went wrong (failed requests, refused verifications) and, with
``--check``, when a goal is missed.

PostgreSQL: ``KEYSERVICE_BENCH_POSTGRES_URL``, else ``KEYSERVICE_TEST_POSTGRES_URL``, else
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres (a user that may create databases). The
service runs with default settings: the caller's other ``KEYSERVICE_*`` variables are not passed
on (the failed-verification throttle, KEYSERVICE_VERIFY_FAILURES_PER_MINUTE, stays on: only
valid keys are sent).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, generators, say
from bench.generators import LoadGenerator
from bench.report import Goal, Machine, Report
from bench.results import Phase, PhaseResult, RouteSummary, Target, summarise
from bench.service import ROOT, Server, admin, database, prepare

DEFAULT_OUTPUT = ROOT / "docs" / "performance.md"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
RATIO_GOAL = 0.80

TRIVIAL = Target("GET", "/healthz")


@dataclass(frozen=True)
class Fixture:
    """The data the phases use."""

    owner_key: str
    application_id: str
    key: str


def create_fixture(server: Server, owner_key: str) -> Fixture:
    """An application and one of its keys, through the API as a customer would create them."""
    headers = {"Authorization": f"Bearer {owner_key}"}
    response = server.client.post(
        "/v1/applications",
        headers=headers,
        json={
            "name": "Bench",
            "developer_email": "bench@example.com",
            "permissions": ["contacts:read", "contacts:write", "deals:read"],
        },
    )
    if response.status_code != 201:
        raise BenchError(f"creating the application failed: {response.text}")
    application_id = response.json()["id"]
    response = server.client.post(
        f"/v1/applications/{application_id}/keys",
        headers=headers,
        json={"name": "Bench key", "scopes": ["contacts:read", "deals:read"]},
    )
    if response.status_code != 201:
        raise BenchError(f"creating the key failed: {response.text}")
    return Fixture(owner_key=owner_key, application_id=application_id, key=response.json()["key"])


def verify_body(key: str) -> str:
    return json.dumps({"key": key, "scopes": ["contacts:read"]}, ensure_ascii=False)


def warm_cache(server: Server, fixture: Fixture) -> None:
    """Verify the key once, so that the load finds it cached; and check that it verifies."""
    response = server.client.post(
        "/v1/verify",
        content=verify_body(fixture.key).encode(),
        headers={"Content-Type": "application/json"},
    )
    if response.status_code != 200 or response.json().get("code") != "VALID":
        raise BenchError(f"the bench key does not verify: {response.status_code} {response.text}")


def plan(fixture: Fixture, *, seconds: int, warmup: int) -> list[Phase]:
    """The phases, in order. The trivial route runs before and after verify, and the ratio uses
    the mean of both, so that a machine slowing down or speeding up meanwhile cancels out.

    A later scenario (rate limiting, keys spread over 10,000, several instances) adds phases of
    its own names, its data to ``Fixture`` and its goals to ``goals()``."""
    verify = Target("POST", "/v1/verify", (verify_body(fixture.key),))
    return [
        Phase("warm-up", TRIVIAL, warmup, measured=False),
        Phase("warm-up", verify, warmup, measured=False),
        Phase("trivial", TRIVIAL, seconds),
        Phase("verify", verify, seconds),
        Phase("trivial", TRIVIAL, seconds),
    ]


def run_phase(server: Server, generator: LoadGenerator, phase: Phase) -> PhaseResult:
    say(f"bench: {phase.name}: {phase.target.route} for {phase.seconds} s")
    before = server.counters()
    server_cpu = server.cpu_seconds()
    load, loadgen_cpu = generator.run(phase.target, server.port, phase.seconds)
    server_cpu_after = server.cpu_seconds()
    # Read after the load generator has exited: nothing is in flight any more.
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


def goals(summaries: dict[str, RouteSummary]) -> list[Goal]:
    trivial, verify = summaries["trivial"], summaries["verify"]
    ratio = verify.rps / trivial.rps
    sql = verify.sql_per_1000_verifications
    if sql is None:
        raise BenchError("the verify phases verified nothing")
    return [
        Goal(
            "verify/trivial requests/s",
            f"{ratio:.2f}",
            f"at least {RATIO_GOAL:.2f}",
            ratio >= RATIO_GOAL,
        ),
        Goal(
            "SQL statements per 1000 verifications",
            "0" if sql == 0 else f"{sql:,.2f}",
            "0, no SQL on a cache hit",
            sql == 0,
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


def setup_lines(
    args: argparse.Namespace,
    phases: Sequence[Phase],
    cpus: tuple[frozenset[int] | None, frozenset[int] | None],
) -> list[str]:
    server_cpus, loadgen_cpus = cpus
    pinning = (
        f"server pinned to CPU {_cpus(server_cpus)}, load generator to CPU {_cpus(loadgen_cpus)}"
        if server_cpus and loadgen_cpus
        else "not pinned"
    )
    measured = ", ".join(f"{p.target.route} ({p.name})" for p in phases if p.measured)
    return [
        "Server: bench/server.py (keyservice's app with default settings, plus statement and "
        "verification counters) under uvicorn, 1 worker, `--no-access-log --log-level "
        "warning`, on 127.0.0.1, with its key invalidation listener",
        f"CPUs: {pinning}",
        f"Phases: {args.warmup} s warm-up of each route, then {measured}: {args.seconds} s "
        f"each, {args.connections} connections",
        f"Verify request: `POST /v1/verify` with body `{verify_body('ks_live_…')}`: an "
        "application's key, valid for the scope, already cached (verified once before the load)",
        'Trivial route: `GET /healthz`, a constant pydantic model (`{"status":"ok"}`)',
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
    server_cpus, loadgen_cpus = plan_cpus(not args.no_pin)
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
                fixture = create_fixture(server, owner_key)
                warm_cache(server, fixture)
                phases = plan(fixture, seconds=args.seconds, warmup=args.warmup)
                results = [run_phase(server, generator, phase) for phase in phases]
        summaries = summarise(results)
        report = Report(
            date=dt.datetime.now(dt.UTC),
            machine=Machine.here(postgres_version),
            generator=generator.describe(),
            setup=setup_lines(args, phases, (server_cpus, loadgen_cpus)),
            results=results,
            summaries=summaries,
            goals=goals(summaries),
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

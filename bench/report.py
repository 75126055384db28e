"""The run's report: a summary on the terminal and docs/performance.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.results import AccuracyResult, PhaseResult, RouteSummary

# A load generator busier than this share of its core may be what limits the throughput.
LOADGEN_BUSY = 0.90
PACKAGES = ["fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools", "sqlalchemy"]
PACKAGES += ["asyncpg"]


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    memory: str
    system: str
    python: str
    postgres: str
    packages: str

    @classmethod
    def here(cls, postgres_version: str) -> Machine:
        cpu_model = "unknown CPU"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        memory = "unknown"
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                    break
        versions = []
        for package in PACKAGES:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                versions.append(f"{package} {importlib.metadata.version(package)}")
        return cls(
            # What nproc counts: the CPUs this process may run on.
            cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
            cpu_model=cpu_model,
            memory=memory,
            system=f"{platform.system()} {platform.release()} {platform.machine()}",
            python=f"{platform.python_implementation()} {platform.python_version()}",
            postgres=postgres_version,
            packages=", ".join(versions),
        )


@dataclass(frozen=True)
class Goal:
    what: str
    value: str
    target: str
    met: bool

    def line(self) -> str:
        return (
            f"{self.what}: {self.value} (goal: {self.target}; {'met' if self.met else 'NOT met'})"
        )


@dataclass(frozen=True)
class Report:
    date: dt.datetime
    machine: Machine
    generator: str
    # Scenario-specific lines for the report's setup section (phases, requests, CPUs).
    setup: Sequence[str]
    results: Sequence[PhaseResult]
    summaries: dict[str, RouteSummary]
    goals: Sequence[Goal]
    # The phase the others' requests/s are compared with.
    baseline: str | None = None
    accuracy: AccuracyResult | None = None
    # The scenario's own warnings, for the notes.
    scenario_warnings: Sequence[str] = ()
    # What the scenario reads in its numbers.
    observations: Sequence[str] = ()

    @property
    def problems(self) -> list[str]:
        """What makes this run's numbers meaningless."""
        found = []
        for result in self.results:
            label = f"{result.phase.name} ({result.phase.target.route})"
            if result.load.errors:
                found.append(f"{label}: {result.load.errors} failed requests")
            if result.counters.refused:
                found.append(f"{label}: {result.counters.refused} verifications refused")
            if result.counters.rate_limited:
                found.append(
                    f"{label}: {result.counters.rate_limited} verifications refused by a rate "
                    "limit that should never refuse there"
                )
        accuracy = self.accuracy
        if accuracy is not None:
            load, counters = accuracy.load, accuracy.counters
            if load.errors:
                found.append(f"accuracy: {load.errors} failed or unanswered requests")
            unexpected = {c: n for c, n in load.codes.items() if c not in ACCURACY_CODES}
            if unexpected:
                found.append(f"accuracy: unexpected answers {unexpected}")
            if counters.verified != accuracy.admitted:
                found.append(
                    f"accuracy: the load generator saw {accuracy.admitted:,} admitted, the "
                    f"instances counted {counters.verified:,}"
                )
            if counters.refused:
                found.append(f"accuracy: {counters.refused} verifications refused")
        return found

    @property
    def warnings(self) -> list[str]:
        found = list(self.scenario_warnings)
        for result in self.results:
            if result.phase.measured and result.loadgen_cpu_share >= LOADGEN_BUSY:
                found.append(
                    f"the load generator used {result.loadgen_cpu_share:.0%} of a core in "
                    f"{result.phase.name} ({result.phase.target.route}): it may be what limited "
                    "the throughput there, not the server"
                )
        accuracy = self.accuracy
        if accuracy is not None and accuracy.load.requests < 2 * accuracy.allowance:
            found.append(
                f"accuracy: {accuracy.load.requests:,} requests for an allowance of "
                f"{accuracy.allowance:,.0f}: the load was not well over the limit"
            )
        return found

    def console(self) -> str:
        lines = [
            "",
            _text_table(self._summary_headers(), self._summary_rows()),
            "",
            "SQL per 1000 verifications:",
            _text_table(SQL_HEADERS, self._sql_rows()),
        ]
        if self.accuracy is not None:
            lines += ["", "accuracy:", _text_table(ACCURACY_HEADERS, self._accuracy_rows())]
        lines += ["", *(goal.line() for goal in self.goals)]
        if self.observations:
            lines += ["", *self.observations]
        lines += [
            "",
            "runs:",
            _text_table(RUN_HEADERS, self._run_rows()),
        ]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def markdown(self) -> str:
        machine = self.machine
        met = all(goal.met for goal in self.goals) and not self.problems
        lines = [
            "# Performance",
            "",
            "The latest run of `make bench`, which rewrites this file; what it measures and how is",
            "in [bench/README.md](../bench/README.md). One run on one machine: absolute numbers",
            "move with the machine and its neighbours, ratios measured within one run much less.",
            "",
            "## Setup",
            "",
            "- Command: `make bench`",
            f"- Date: {self.date:%Y-%m-%d %H:%M} UTC",
            f"- Machine: {machine.cpus} CPUs (nproc), {machine.cpu_model}, {machine.memory} RAM, "
            f"{machine.system}",
            f"- Software: {machine.python}, PostgreSQL {machine.postgres}; {machine.packages}",
            f"- Load generator: {self.generator}",
            *(f"- {line}" for line in self.setup),
            "",
            "## Results",
            "",
            _markdown_table(self._summary_headers(), self._summary_rows()),
            "",
            *(f"- {goal.line()}" for goal in self.goals),
            f"- Goals {'met' if met else 'not met'}.",
        ]
        if self.observations:
            lines += ["", "### Observations", "", *(f"- {line}" for line in self.observations)]
        lines += [
            "",
            "### SQL per 1000 verifications",
            "",
            "Statements sent by the app's engine during the measured runs, per 1000",
            "verifications: all of them, then the leases (statements on the rate-limit buckets),",
            "the usage flusher's (every second, in the background) and the rest (key lookups).",
            "Connection checkouts are not statements, but each costs a round trip of its own",
            "(the pool's pre-ping) besides the transaction's BEGIN and COMMIT.",
            "",
            _markdown_table(SQL_HEADERS, self._sql_rows()),
        ]
        if self.accuracy is not None:
            lines += [
                "",
                "### Rate limit accuracy across instances",
                "",
                "Admitted: `VALID` answers. Allowance: burst + rate x elapsed, elapsed from the",
                "first request sent to the last answer. Worst interval: the largest excess over",
                "burst + rate x (end - start) of the requests certainly admitted within any",
                "interval (sent after its start, answered before its end); at most 0 is exact.",
                "",
                _markdown_table(ACCURACY_HEADERS, self._accuracy_rows()),
            ]
        lines += [
            "",
            "## Runs",
            "",
            "In order. Server CPU is the uvicorn process's CPU time over the run (100% is one",
            "core), and per request; load generator CPU likewise. SQL statements are those the",
            "app's engine sent during the run.",
            "",
            _markdown_table(RUN_HEADERS, self._run_rows()),
        ]
        notes = [f"Problem: {p}" for p in self.problems] + [f"Warning: {w}" for w in self.warnings]
        if notes:
            lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
        return "\n".join(lines) + "\n"

    def _summary_headers(self) -> list[str]:
        headers = ["route", "requests/s"]
        if self.baseline is not None:
            headers.append(f"vs {self.baseline}")
        return [*headers, "p50", "p99", "server CPU/request", "SQL/1000 verifications"]

    def _summary_rows(self) -> list[list[str]]:
        rows = []
        baseline = self.summaries.get(self.baseline) if self.baseline is not None else None
        for name, summary in self.summaries.items():
            runs = f", mean of {len(summary.runs)} runs" if len(summary.runs) > 1 else ""
            per_request = summary.server_cpu_us_per_request
            sql = summary.sql_per_1000_verifications
            row = [f"{summary.route} ({name}{runs})", f"{summary.rps:,.0f}"]
            if self.baseline is not None:
                row.append("n/a" if baseline is None else f"{summary.rps / baseline.rps:.2f}")
            rows.append(
                [
                    *row,
                    latency(summary.p50_ms),
                    latency(summary.p99_ms),
                    "n/a" if per_request is None else f"{per_request:,.0f} µs",
                    "n/a" if sql is None or summary is baseline else per_1000(sql),
                ]
            )
        return rows

    def _sql_rows(self) -> list[list[str]]:
        rows = []
        for name, summary in self.summaries.items():
            counters = summary.counters
            if not counters.verifications or name == self.baseline:
                continue

            def per(count: int, summary: RouteSummary = summary) -> str:
                value = summary.per_1000_verifications(count)
                return "n/a" if value is None else per_1000(value)

            rows.append(
                [
                    name,
                    f"{counters.verifications:,}",
                    f"{counters.sql_statements:,}",
                    per(counters.sql_statements),
                    per(counters.sql_lease),
                    per(counters.sql_flush),
                    per(counters.sql_other),
                    per(counters.checkouts),
                ]
            )
        return rows

    def _accuracy_rows(self) -> list[list[str]]:
        accuracy = self.accuracy
        if accuracy is None:
            return []
        load = accuracy.load
        period = accuracy.period_seconds
        limit = f"{accuracy.limit:,}/{'s' if period == 1 else f'{period} s'}"
        refused = load.codes.get("RATE_LIMITED", 0)
        return [
            [
                str(accuracy.instances),
                f"{limit}, burst {accuracy.burst:,}",
                f"{load.seconds:.2f} s",
                f"{load.requests:,}",
                f"{load.requests / load.seconds:,.0f}" if load.seconds else "n/a",
                f"{accuracy.admitted:,}",
                f"{refused:,}",
                f"{accuracy.allowance:,.1f}",
                f"{accuracy.ratio:.3f}",
                f"{accuracy.over:+,.1f}",
                f"{accuracy.worst_excess:+,.1f}",
                *(
                    per_1000(count / load.requests * 1000) if load.requests else "n/a"
                    for count in (
                        accuracy.counters.sql_statements,
                        accuracy.counters.leases_taken,
                    )
                ),
            ]
        ]

    def _run_rows(self) -> list[list[str]]:
        rows = []
        for number, result in enumerate(self.results, 1):
            load = result.load
            server_share = result.server_cpu_share
            per_request = result.server_cpu_us_per_request
            rows.append(
                [
                    str(number),
                    result.phase.name,
                    result.phase.target.route,
                    f"{load.seconds:.1f} s",
                    f"{load.requests:,}",
                    f"{load.rps:,.0f}",
                    latency(load.p50_ms),
                    latency(load.p99_ms),
                    str(load.errors),
                    "n/a" if server_share is None else f"{server_share:.0%}",
                    "n/a" if per_request is None else f"{per_request:,.0f} µs",
                    f"{result.loadgen_cpu_share:.0%}",
                    f"{result.counters.verifications:,}",
                    f"{result.counters.sql_statements:,}",
                ]
            )
        return rows


# What the accuracy run's key may answer.
ACCURACY_CODES = {"VALID", "RATE_LIMITED"}
SQL_HEADERS = ["phase", "verifications", "SQL statements", "SQL/1000", "leases/1000"]
SQL_HEADERS += ["usage flushes/1000", "other/1000", "connection checkouts/1000"]
ACCURACY_HEADERS = ["instances", "rate limit", "elapsed", "requests", "requests/s", "admitted"]
ACCURACY_HEADERS += ["rate limited", "allowance", "admitted/allowance", "over the allowance"]
ACCURACY_HEADERS += ["worst interval", "SQL/1000 requests", "leases/1000 requests"]
RUN_HEADERS = ["#", "phase", "route", "duration", "requests", "requests/s", "p50", "p99"]
RUN_HEADERS += ["errors", "server CPU", "server CPU/request", "load generator CPU"]
RUN_HEADERS += ["verifications", "SQL statements"]
# Columns of text rather than numbers, aligned left.
TEXT_COLUMNS = {"route", "phase", "rate limit"}


def latency(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


def per_1000(value: float) -> str:
    return "0" if value == 0 else f"{value:,.2f}"


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(map(len, column)) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if header in TEXT_COLUMNS else cell.rjust(width)
            for header, cell, width in zip(headers, cells, widths, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    separator = ["---" if header in TEXT_COLUMNS else "---:" for header in headers]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [headers, separator, *rows])

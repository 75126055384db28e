"""What the runs measured, and docs/performance.md, which says it (its template: report.md)."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.accuracy import Accuracy, limit_text
from bench.server import Counters
from bench.wrk import Load

TEMPLATE = Path(__file__).with_name("report.md")
# A load generator busier than this share of its core may be what limits the throughput.
LOADGEN_BUSY = 0.90
PACKAGES = ["fastapi", "starlette", "pydantic", "uvicorn", "uvloop", "httptools", "sqlalchemy"]
PACKAGES += ["asyncpg"]
# What the accuracy run's key may answer.
ACCURACY_CODES = {"VALID", "RATE_LIMITED"}
# Columns of text rather than numbers, aligned left.
TEXT_COLUMNS = {"route", "phase", "rate limit"}

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """One wrk run against one instance."""

    phase: str
    route: str
    measured: bool
    load: Load
    # The server's counters over the run; None for an instance without them (as shipped).
    counters: Counters | None
    server_cpu_seconds: float
    loadgen_cpu_seconds: float


@dataclass(frozen=True)
class Summary:
    """The measured runs of one phase: the mean of their requests/s, p50 and p99."""

    name: str
    runs: tuple[Run, ...]

    @property
    def rps(self) -> float:
        return statistics.fmean(r.load.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.fmean(r.load.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.fmean(r.load.p99_ms for r in self.runs)

    @property
    def server_cpu_us_per_request(self) -> float:
        """Steadier than requests/s on a shared machine: it ignores time the server was not run."""
        cpu = sum(r.server_cpu_seconds for r in self.runs)
        return cpu / sum(r.load.requests for r in self.runs) * 1e6

    @property
    def verifications(self) -> int:
        return sum(r.load.verifications for r in self.runs)

    @property
    def counters(self) -> Counters:
        return sum((r.counters for r in self.runs if r.counters is not None), Counters())

    def per_1000(self, count: int) -> float | None:
        """``count`` per 1000 verifications of the runs; None where they verified nothing."""
        return count / self.verifications * 1000 if self.verifications else None


def summarise(runs: Sequence[Run]) -> dict[str, Summary]:
    """Measured runs by phase, in the order the phases first ran."""
    grouped: dict[str, list[Run]] = {}
    for run in runs:
        if run.measured:
            grouped.setdefault(run.phase, []).append(run)
    return {name: Summary(name, tuple(runs)) for name, runs in grouped.items()}


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


def latency(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


def per_1000(value: float | None) -> str:
    return "n/a" if value is None else "0" if value == 0 else f"{value:,.2f}"


def table(
    columns: Sequence[tuple[str, Callable[[T], str]]], items: Sequence[T], numbered: bool = False
) -> str:
    """A markdown table, a row per item (numbered: from 1, in a first column ``#``): text aligned
    left, numbers right."""
    headers = ["#"] * numbered + [header for header, _ in columns]
    align = ["---" if header in TEXT_COLUMNS else "---:" for header in headers]
    rows = [
        [str(number)] * numbered + [cell(item) for _, cell in columns]
        for number, item in enumerate(items, 1)
    ]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [headers, align, *rows])


def machine(postgres_version: str) -> dict[str, str]:
    cpu, memory = "unknown CPU", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    versions = []
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    system = f"{platform.system()} {platform.release()} {platform.machine()}"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return {
        # What nproc counts: the CPUs this process may run on.
        "machine": f"{len(os.sched_getaffinity(0))} CPUs (nproc), {cpu}, {memory} RAM, {system}",
        "software": f"{python}, PostgreSQL {postgres_version}; {', '.join(versions)}",
    }


@dataclass(frozen=True)
class Report:
    runs: Sequence[Run]
    summaries: dict[str, Summary]
    # The phase the others' requests/s are compared with.
    baseline: str
    goals: Sequence[Goal]
    accuracy: Accuracy
    # The scenario's own: results beside the goals, the template's values, warnings.
    results: Sequence[str]
    values: dict[str, str]
    scenario_warnings: Sequence[str]

    @property
    def problems(self) -> list[str]:
        """What makes this run's numbers meaningless."""
        found = []
        for run in self.runs:
            label = f"{run.phase} ({run.route})"
            if run.load.errors:
                found.append(f"{label}: {run.load.errors} failed requests")
            refused = {code: n for code, n in run.load.codes.items() if code != "VALID"}
            if refused:
                found.append(f"{label}: verifications refused where none should be: {refused}")
        a = self.accuracy
        if a.errors:
            found.append(f"accuracy: {a.errors} failed or unanswered requests")
        unexpected = {c: n for c, n in a.codes.items() if c not in ACCURACY_CODES}
        if unexpected:
            found.append(f"accuracy: unexpected answers {unexpected}")
        if a.usage != (a.admitted, a.refused):
            found.append(
                f"accuracy: wrk saw {a.admitted:,} admitted and {a.refused:,} refused, the "
                f"instances' usage counters (allowed, refused) {a.usage}"
            )
        return found

    @property
    def warnings(self) -> list[str]:
        found = list(self.scenario_warnings)
        for run in self.runs:
            busy = run.loadgen_cpu_seconds / run.load.seconds
            if run.measured and busy >= LOADGEN_BUSY:
                found.append(
                    f"wrk used {busy:.0%} of a core in {run.phase} ({run.route}): it may be what "
                    "limited the throughput there, not the server"
                )
        if self.accuracy.requests < 2 * self.accuracy.allowance:
            found.append(
                f"accuracy: {self.accuracy.requests:,} requests for an allowance of "
                f"{self.accuracy.allowance:,.0f}: the load was not well over the limit"
            )
        return found

    def notes(self) -> list[str]:
        notes = [f"Problem: {p}" for p in self.problems] + [f"Warning: {w}" for w in self.warnings]
        return ["", "## Notes", "", *(f"- {note}" for note in notes)] if notes else []

    def results_section(self) -> str:
        baseline = self.summaries[self.baseline].rps
        met = all(goal.met for goal in self.goals) and not self.problems
        results_table = table(
            [
                ("route", lambda s: f"{s.runs[0].route} ({s.name}{_runs(s)})"),
                ("requests/s", lambda s: f"{s.rps:,.0f}"),
                (f"vs {self.baseline}", lambda s: f"{s.rps / baseline:.2f}"),
                ("p50", lambda s: latency(s.p50_ms)),
                ("p99", lambda s: latency(s.p99_ms)),
                ("server CPU/request", lambda s: f"{s.server_cpu_us_per_request:,.0f} µs"),
                (
                    "SQL/1000 verifications",
                    lambda s: per_1000(s.per_1000(s.counters.sql_statements)),
                ),
            ],
            list(self.summaries.values()),
        )
        return "\n".join(
            ["## Results", "", results_table, ""]
            + [f"- {goal.line()}" for goal in self.goals]
            + [f"- Goals {'met' if met else 'not met'}."]
            + [f"- {line}" for line in self.results]
        )

    def markdown(self) -> str:
        values = self.values | {
            "date": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "results": self.results_section(),
            "sql_table": table(
                SQL_COLUMNS, [s for s in self.summaries.values() if s.verifications]
            ),
            "accuracy_table": table(ACCURACY_COLUMNS, [self.accuracy]),
            "runs_table": table(RUN_COLUMNS, self.runs, numbered=True),
        }
        document = string.Template(TEMPLATE.read_text()).substitute(values)
        return "\n".join([document.rstrip("\n"), *self.notes()]) + "\n"


def _runs(summary: Summary) -> str:
    return f", mean of {len(summary.runs)} runs" if len(summary.runs) > 1 else ""


def _per_verification(count: Callable[[Counters], int]) -> Callable[[Summary], str]:
    return lambda s: per_1000(s.per_1000(count(s.counters)))


def _per_request(count: Callable[[Counters], int]) -> Callable[[Accuracy], str]:
    return lambda a: per_1000(count(a.counters) / a.requests * 1000)


SQL_COLUMNS: list[tuple[str, Callable[[Summary], str]]] = [
    ("phase", lambda s: s.name),
    ("verifications", lambda s: f"{s.verifications:,}"),
    ("SQL statements", lambda s: f"{s.counters.sql_statements:,}"),
    ("SQL/1000", _per_verification(lambda c: c.sql_statements)),
    ("leases/1000", _per_verification(lambda c: c.sql_lease)),
    ("background work/1000", _per_verification(lambda c: c.sql_flush)),
    ("other/1000", _per_verification(lambda c: c.sql_other)),
    ("connection checkouts/1000", _per_verification(lambda c: c.checkouts)),
]
ACCURACY_COLUMNS: list[tuple[str, Callable[[Accuracy], str]]] = [
    ("instances", lambda a: str(a.instances)),
    ("rate limit", lambda a: limit_text(a.rate_limit)),
    ("elapsed", lambda a: f"{a.elapsed:.2f} s"),
    ("requests", lambda a: f"{a.requests:,}"),
    ("requests/s", lambda a: f"{a.requests / a.elapsed:,.0f}"),
    ("admitted", lambda a: f"{a.admitted:,}"),
    ("rate limited", lambda a: f"{a.refused:,}"),
    ("allowance", lambda a: f"{a.allowance:,.1f}"),
    ("admitted/allowance", lambda a: f"{a.ratio:.3f}"),
    ("over the allowance", lambda a: f"{a.over:+,.1f}"),
    ("worst interval", lambda a: f"{a.worst_excess:+,.1f}"),
    ("SQL/1000 requests", _per_request(lambda c: c.sql_statements)),
    ("leases/1000 requests", _per_request(lambda c: c.leases_taken)),
]
RUN_COLUMNS: list[tuple[str, Callable[[Run], str]]] = [
    ("phase", lambda r: r.phase),
    ("route", lambda r: r.route),
    ("duration", lambda r: f"{r.load.seconds:.1f} s"),
    ("requests", lambda r: f"{r.load.requests:,}"),
    ("requests/s", lambda r: f"{r.load.rps:,.0f}"),
    ("p50", lambda r: latency(r.load.p50_ms)),
    ("p99", lambda r: latency(r.load.p99_ms)),
    ("errors", lambda r: str(r.load.errors)),
    ("server CPU", lambda r: f"{r.server_cpu_seconds / r.load.seconds:.0%}"),
    ("server CPU/request", lambda r: f"{r.server_cpu_seconds / r.load.requests * 1e6:,.0f} µs"),
    ("load generator CPU", lambda r: f"{r.loadgen_cpu_seconds / r.load.seconds:.0%}"),
    ("verifications", lambda r: f"{r.load.verifications:,}"),
    ("SQL statements", lambda r: "n/a" if r.counters is None else f"{r.counters.sql_statements:,}"),
]

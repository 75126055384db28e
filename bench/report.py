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

from bench.results import PhaseResult, RouteSummary

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
        return found

    @property
    def warnings(self) -> list[str]:
        found = []
        for result in self.results:
            if result.phase.measured and result.loadgen_cpu_share >= LOADGEN_BUSY:
                found.append(
                    f"the load generator used {result.loadgen_cpu_share:.0%} of a core in "
                    f"{result.phase.name} ({result.phase.target.route}): it may be what limited "
                    "the throughput there, not the server"
                )
        return found

    def console(self) -> str:
        lines = [
            "",
            _text_table(SUMMARY_HEADERS, self._summary_rows()),
            "",
            *(goal.line() for goal in self.goals),
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
            _markdown_table(SUMMARY_HEADERS, self._summary_rows()),
            "",
            *(f"- {goal.line()}" for goal in self.goals),
            f"- Goals {'met' if met else 'not met'}.",
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

    def _summary_rows(self) -> list[list[str]]:
        rows = []
        for name, summary in self.summaries.items():
            runs = f", mean of {len(summary.runs)} runs" if len(summary.runs) > 1 else ""
            per_request = summary.server_cpu_us_per_request
            rows.append(
                [
                    f"{summary.route} ({name}{runs})",
                    f"{summary.rps:,.0f}",
                    latency(summary.p50_ms),
                    latency(summary.p99_ms),
                    "n/a" if per_request is None else f"{per_request:.0f} µs",
                ]
            )
        return rows

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
                    "n/a" if per_request is None else f"{per_request:.0f} µs",
                    f"{result.loadgen_cpu_share:.0%}",
                    str(result.counters.sql_statements),
                ]
            )
        return rows


SUMMARY_HEADERS = ["route", "requests/s", "p50", "p99", "server CPU/request"]
RUN_HEADERS = ["#", "phase", "route", "duration", "requests", "requests/s", "p50", "p99"]
RUN_HEADERS += ["errors", "server CPU", "server CPU/request", "load generator CPU"]
RUN_HEADERS += ["SQL statements"]
# Columns of text rather than numbers, aligned left.
TEXT_COLUMNS = {"route", "phase"}


def latency(ms: float) -> str:
    return f"{ms * 1000:.0f} µs" if ms < 1 else f"{ms:.2f} ms"


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

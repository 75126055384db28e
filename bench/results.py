"""What a phase sends and what it measured, and the summary of a route's runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A request to repeat: with ``bodies`` (JSON, sent in turn, one per request) or without."""

    method: str
    path: str
    bodies: tuple[str, ...] = ()

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Phase:
    """One load run. The report groups measured runs by ``name`` (``trivial``, ``verify``)."""

    name: str
    target: Target
    seconds: int
    measured: bool = True


@dataclass(frozen=True)
class LoadResult:
    """What the load generator saw."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    # Socket errors, timeouts and 4xx/5xx answers.
    errors: int


@dataclass(frozen=True)
class Counters:
    """bench/server.py's counters (``GET /bench/counters``)."""

    sql_statements: int
    verified: int
    refused: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            sql_statements=self.sql_statements - other.sql_statements,
            verified=self.verified - other.verified,
            refused=self.refused - other.refused,
        )


@dataclass(frozen=True)
class PhaseResult:
    phase: Phase
    load: LoadResult
    # The server's counters over the run (after minus before).
    counters: Counters
    # CPU time of the server and of the load generator over the run (None: not measurable here).
    server_cpu_seconds: float | None
    loadgen_cpu_seconds: float

    @property
    def server_cpu_share(self) -> float | None:
        if self.server_cpu_seconds is None:
            return None
        return self.server_cpu_seconds / self.load.seconds

    @property
    def loadgen_cpu_share(self) -> float:
        return self.loadgen_cpu_seconds / self.load.seconds

    @property
    def server_cpu_us_per_request(self) -> float | None:
        if self.server_cpu_seconds is None or not self.load.requests:
            return None
        return self.server_cpu_seconds / self.load.requests * 1e6


@dataclass(frozen=True)
class RouteSummary:
    """The measured runs of one phase name: the mean of their requests/s, p50 and p99."""

    name: str
    route: str
    runs: tuple[PhaseResult, ...]

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
    def server_cpu_us_per_request(self) -> float | None:
        """Steadier than requests/s on a shared machine: it ignores time the server was not run."""
        if any(r.server_cpu_seconds is None for r in self.runs):
            return None
        requests = sum(r.load.requests for r in self.runs)
        cpu = sum(r.server_cpu_seconds or 0.0 for r in self.runs)
        return cpu / requests * 1e6 if requests else None

    @property
    def sql_per_1000_verifications(self) -> float | None:
        """None where the runs verified nothing."""
        verifications = sum(r.counters.verified + r.counters.refused for r in self.runs)
        if not verifications:
            return None
        return sum(r.counters.sql_statements for r in self.runs) / verifications * 1000


def summarise(results: Sequence[PhaseResult]) -> dict[str, RouteSummary]:
    """Measured runs by phase name, in the order the names first ran."""
    grouped: dict[str, list[PhaseResult]] = {}
    for result in results:
        if result.phase.measured:
            grouped.setdefault(result.phase.name, []).append(result)
    return {
        name: RouteSummary(name, runs[0].phase.target.route, tuple(runs))
        for name, runs in grouped.items()
    }

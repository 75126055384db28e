"""What a phase sends and what it measured, and the summary of a route's runs."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields


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
    """bench/server.py's counters (``GET /bench/counters``), or their change over a run."""

    # Every statement the app's engine sent, and among them the usage flusher's and the leases
    # (statements on the rate-limit buckets); the rest are lookups and the management API's.
    sql_statements: int
    sql_flush: int
    sql_lease: int
    # Connections checked out of the pool: each costs a round trip (pre-ping), not a statement.
    checkouts: int
    verified: int
    # Refused by the key's rate limit or quota (``RATE_LIMITED``, ``QUOTA_EXCEEDED``).
    rate_limited: int
    # Refused for any other reason.
    refused: int
    leases_taken: int
    # The garbage collector's pauses (all generations), and its full collections among them.
    gc_pause_us: int
    gc_full_collections: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @property
    def verifications(self) -> int:
        return self.verified + self.rate_limited + self.refused

    @property
    def sql_other(self) -> int:
        return self.sql_statements - self.sql_flush - self.sql_lease


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
    def counters(self) -> Counters:
        """The server's counters over all the runs."""
        total = self.runs[0].counters
        for run in self.runs[1:]:
            total = total + run.counters
        return total

    def per_1000_verifications(self, count: int) -> float | None:
        """``count`` per 1000 verifications of the runs; None where they verified nothing."""
        verifications = self.counters.verifications
        return count / verifications * 1000 if verifications else None

    @property
    def sql_per_1000_verifications(self) -> float | None:
        return self.per_1000_verifications(self.counters.sql_statements)


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


@dataclass(frozen=True)
class AccuracyLoad:
    """What bench/overload.py saw: every request it sent was answered, or is an error."""

    requests: int
    # Answers by ``code`` (``VALID``, ``RATE_LIMITED``, ...).
    codes: dict[str, int]
    # Socket errors, requests left unanswered, non-200 answers, bodies without a code.
    errors: int
    # From the first request sent to the last answer received.
    seconds: float
    # Send and answer times of the admitted (VALID) requests, in seconds from the first send.
    admitted: tuple[tuple[float, float], ...]
    connections: int

    @property
    def admitted_count(self) -> int:
        return self.codes.get("VALID", 0)


def worst_interval_excess(
    admitted: Sequence[tuple[float, float]], burst: int, rate: float
) -> float:
    """The largest ``n - (burst + rate x (end - start))`` over every interval, where ``n`` counts
    the requests certainly admitted within it: sent at or after ``start``, answered by ``end``.

    Admission happens somewhere between a request's send and its answer, so a positive excess is a
    real violation. Intervals start at a send and end at an answer; O(n^2) for n admitted.
    """
    ordered = sorted(admitted)
    answers: list[float] = []
    worst = float("-inf")
    # From the latest start back, keeping the answers of the requests sent since, sorted.
    for sent, answered in reversed(ordered):
        bisect.insort(answers, answered)
        best = max(count - rate * end for count, end in enumerate(answers, start=1))
        worst = max(worst, best + rate * sent - burst)
    return worst


@dataclass(frozen=True)
class AccuracyResult:
    """The multi-instance accuracy run: one rate-limited key, loaded through several instances."""

    limit: int
    period_seconds: int
    burst: int
    instances: int
    load: AccuracyLoad
    # The instances' counters over the run, summed.
    counters: Counters
    loadgen_cpu_seconds: float
    worst_excess: float

    @property
    def rate(self) -> float:
        return self.limit / self.period_seconds

    @property
    def allowance(self) -> float:
        """The exact allowance over the run: ``burst + rate x elapsed``."""
        return self.burst + self.rate * self.load.seconds

    @property
    def admitted(self) -> int:
        return self.load.admitted_count

    @property
    def ratio(self) -> float:
        return self.admitted / self.allowance

    @property
    def over(self) -> float:
        """Requests admitted beyond the allowance (negative: within it)."""
        return self.admitted - self.allowance

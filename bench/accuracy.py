"""The accuracy run: is a key's rate limit exact across instances?

Two instances serve the same database. One key with a modest rate limit is loaded through both at
once, well over its limit, by one wrk per instance in bench/wrk.lua's accuracy mode (a connection
per thread, each timing its requests and stopping at its first answer past the deadline), so
that every answer is read. The requests admitted (``VALID``) are compared with the exact
allowance ``burst + rate x elapsed``, elapsed running from the first request sent to the last
answer: every admission happened within it, so more than the allowance would be a violation.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench import BenchError, say, wrk
from bench.instance import Server
from bench.server import Counters

# Beyond the deadline, what wrk's own end (-d) leaves a request in flight to be answered.
ANSWER_SECONDS = 2


def limit_text(rate_limit: dict[str, int]) -> str:
    """A rate limit as the report words it: ``200/s, burst 50``."""
    limit, period, burst = rate_limit["limit"], rate_limit["period_seconds"], rate_limit["burst"]
    return f"{limit:,}/{'s' if period == 1 else f'{period} s'}, burst {burst:,}"


@dataclass(frozen=True)
class Accuracy:
    rate_limit: dict[str, int]
    instances: int
    connections: int
    requests: int
    # Answers by their `code`.
    codes: dict[str, int]
    # Socket errors, 4xx/5xx answers and requests never answered.
    errors: int
    # From the first request sent to the last answer.
    elapsed: float
    # The instances' counters over the run, summed.
    counters: Counters
    worst_excess: float
    # The key's verifications, allowed and refused, as the instances' usage counters have them
    # once they stopped (and wrote their last flush).
    usage: tuple[int, int] | None = None

    @property
    def allowance(self) -> float:
        rate = self.rate_limit["limit"] / self.rate_limit["period_seconds"]
        return self.rate_limit["burst"] + rate * self.elapsed

    @property
    def admitted(self) -> int:
        return self.codes.get("VALID", 0)

    @property
    def refused(self) -> int:
        return self.codes.get("RATE_LIMITED", 0)

    @property
    def ratio(self) -> float:
        return self.admitted / self.allowance

    @property
    def over(self) -> float:
        """Requests admitted beyond the allowance (negative: within it)."""
        return self.admitted - self.allowance


def worst_interval_excess(
    admitted: Sequence[tuple[float, float]], burst: int, rate: float
) -> float:
    """The largest ``n - (burst + rate x (end - start))`` over every interval, where ``n`` counts
    the requests certainly admitted within it: sent at or after ``start``, answered by ``end``.

    Admission happens somewhere between a request's send and its answer, so a positive excess is a
    real violation. Intervals start at a send and end at an answer; O(n^2) for n admitted.
    """
    answers: list[float] = []
    worst = float("-inf")
    # From the latest start back, keeping the answers of the requests sent since, sorted.
    for sent, answered in sorted(admitted, reverse=True):
        bisect.insort(answers, answered)
        best = max(count - rate * end for count, end in enumerate(answers, start=1))
        worst = max(worst, best + rate * sent - burst)
    return worst


def measure(
    servers: list[Server],
    body: str,
    *,
    rate_limit: dict[str, int],
    connections: int,
    seconds: int,
    cpus: frozenset[int] | None,
) -> Accuracy:
    """Load ``servers`` together, ``connections`` each, with ``body`` (a key with
    ``rate_limit``, not used before)."""
    say(f"bench: accuracy: POST /v1/verify on {len(servers)} instances at once for {seconds} s")
    before = [server.counters() for server in servers]
    loads, _ = wrk.run(
        [f"{server.base_url}/v1/verify" for server in servers],
        [body],
        seconds=seconds + ANSWER_SECONDS,
        connections=connections,
        threads=connections,
        cpus=cpus,
        deadline=time.monotonic() + seconds,
    )
    # Every request was answered by now; what the instances still do (a lease) is counted too.
    for server in servers:
        server.settle()
    counters = [server.counters() - old for server, old in zip(servers, before, strict=True)]
    firsts = [load.first for load in loads if load.first is not None]
    lasts = [load.last for load in loads if load.last is not None]
    if len(firsts) < len(loads) or len(lasts) < len(loads):
        raise BenchError("accuracy: an instance answered no request")
    codes: Counter[str] = Counter()
    for load in loads:
        codes.update(load.codes)
    admitted = [times for load in loads for times in load.admitted]
    rate = rate_limit["limit"] / rate_limit["period_seconds"]
    return Accuracy(
        rate_limit=rate_limit,
        instances=len(servers),
        connections=connections * len(servers),
        requests=sum(load.requests for load in loads),
        codes=dict(codes),
        errors=sum(load.errors + load.unanswered for load in loads),
        elapsed=max(lasts) - min(firsts),
        counters=sum(counters[1:], counters[0]),
        worst_excess=worst_interval_excess(admitted, rate_limit["burst"], rate),
    )

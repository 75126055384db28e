"""The multi-instance accuracy run: is a key's rate limit exact across instances?

Two instances of bench/server.py serve the same database. One key with a modest rate limit is
loaded through both at once, well over its limit, by bench/overload.py (one process, pinned like
the other load generators), which reads every answer's ``code`` and waits for the requests in
flight at the deadline. The requests admitted (``VALID``) are compared with the exact allowance
``burst + rate x elapsed``, elapsed running from the first request sent to the last answer: every
admission happened within it, so more than the allowance would be a real violation.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from bench import BenchError, say
from bench.generators import run_pinned
from bench.results import AccuracyLoad, AccuracyResult, worst_interval_excess
from bench.service import ROOT, Server


def run_overload(
    servers: list[Server],
    body: str,
    *,
    connections: int,
    seconds: int,
    cpus: frozenset[int] | None,
) -> tuple[AccuracyLoad, float]:
    """bench/overload.py against ``servers`` at once: what it saw and the CPU seconds it used."""
    with tempfile.NamedTemporaryFile("w", prefix="keyservice-bench-", suffix=".json") as file:
        file.write(body)
        file.flush()
        command = [sys.executable, "-m", "bench.overload", "--body-file", file.name]
        for server in servers:
            command += ["--port", str(server.port)]
        command += ["--connections", str(connections), "--duration", str(seconds)]
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), path])))
        output, cpu = run_pinned(command, seconds=seconds, cpus=cpus, env=env)
    try:
        data = json.loads(output)
        load = AccuracyLoad(
            requests=int(data["requests"]),
            codes={str(code): int(n) for code, n in data["codes"].items()},
            errors=int(data["errors"]),
            seconds=float(data["seconds"]),
            admitted=tuple((float(sent), float(answered)) for sent, answered in data["admitted"]),
            connections=int(data["connections"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"could not read bench/overload.py's report ({exc}):\n{output}") from None
    return load, cpu


def measure(
    servers: list[Server],
    body: str,
    *,
    rate_limit: dict[str, int],
    connections: int,
    seconds: int,
    cpus: frozenset[int] | None,
) -> AccuracyResult:
    """Load ``servers`` together with ``body`` (a key with ``rate_limit``, not used before)."""
    routes = ", ".join(server.base_url for server in servers)
    say(f"bench: accuracy: POST /v1/verify on {routes} at once for {seconds} s")
    before = [server.counters() for server in servers]
    load, cpu = run_overload(servers, body, connections=connections, seconds=seconds, cpus=cpus)
    # Every request was answered (or is an error) by now: nothing is in flight any more.
    for server in servers:
        server.settle()
    changes = [server.counters() - old for server, old in zip(servers, before, strict=True)]
    counters = changes[0]
    for change in changes[1:]:
        counters = counters + change
    limit, period, burst = rate_limit["limit"], rate_limit["period_seconds"], rate_limit["burst"]
    return AccuracyResult(
        limit=limit,
        period_seconds=period,
        burst=burst,
        instances=len(servers),
        load=load,
        counters=counters,
        loadgen_cpu_seconds=cpu,
        worst_excess=worst_interval_excess(load.admitted, burst, limit / period),
    )

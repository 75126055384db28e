"""The server under test: keyservice's app as ``create_app(settings)`` builds it, with its real
runtime, served by uvicorn as ``keyservice serve`` serves it; plus counters only the bench reads.

    python -m bench.server --port 8001      # configured by the usual KEYSERVICE_* variables

The counters come from outside the verify path, from what the runtime (``app.state.runtime``)
exposes: SQL statements and connection checkouts through SQLAlchemy's event listeners on its
engine; the leases its limiter took; the keys in its cache; and the garbage collector's pauses.
``GET /bench/counters`` returns them. wrk counts the verifications, by their answers' codes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import event

from bench import HOST
from keyservice.config import Settings
from keyservice.main import create_app
from keyservice.runtime import Runtime

COUNTERS_PATH = "/bench/counters"
# The runtime's background workers (usage flusher, webhook delivery, scheduler, probes) name
# their tasks so: their statements are not the request path's.
BACKGROUND_TASKS = "keyservice-"
# The rate limiter's shared buckets (keyservice.models.RateBucket): statements on it are leases.
BUCKETS_TABLE = "rate_buckets"


@dataclass
class Counters:
    """What the server did since it started; in the bench, their change over a run."""

    # Every statement the app's engine sent, and among them the background workers' (the usage
    # flusher, webhook delivery, the scheduler) and the leases; the rest are lookups and the
    # management API's.
    sql_statements: int = 0
    sql_flush: int = 0
    sql_lease: int = 0
    # Connections checked out of the pool: each costs a round trip (pre-ping), not a statement.
    checkouts: int = 0
    leases_taken: int = 0
    cache_entries: int = 0
    # The garbage collector's pauses (all generations), and its full collections among them:
    # those traverse every object the process keeps, its cached keys among them.
    gc_pause_us: int = 0
    gc_full_collections: int = 0

    def __sub__(self, other: Counters) -> Counters:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return Counters(*(mine - theirs for mine, theirs in pairs))

    def __add__(self, other: Counters) -> Counters:
        pairs = zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
        return Counters(*(mine + theirs for mine, theirs in pairs))

    @property
    def sql_other(self) -> int:
        return self.sql_statements - self.sql_flush - self.sql_lease


def create() -> FastAPI:
    app = create_app(Settings())
    runtime: Runtime = app.state.runtime
    # Built without a sessionmaker, the app owns its engine, as in production.
    assert runtime.engine is not None
    counts = Counters()
    gc_started = 0.0

    def statement(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts.sql_statements += 1
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith(BACKGROUND_TASKS):
            counts.sql_flush += 1
        elif BUCKETS_TABLE in statement:
            counts.sql_lease += 1

    def checkout(*_args: Any) -> None:
        counts.checkouts += 1

    def collection(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_started
        if phase == "start":
            gc_started = time.perf_counter()
            return
        counts.gc_pause_us += round((time.perf_counter() - gc_started) * 1e6)
        if info["generation"] == len(gc.get_threshold()) - 1:
            counts.gc_full_collections += 1

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", statement)
    event.listen(runtime.engine.sync_engine.pool, "checkout", checkout)
    gc.callbacks.append(collection)

    async def counters() -> dict[str, int]:
        now = dataclasses.replace(
            counts, leases_taken=runtime.limiter.leases_taken, cache_entries=len(runtime.cache)
        )
        return dataclasses.asdict(now)

    app.add_api_route(COUNTERS_PATH, counters, methods=["GET"], include_in_schema=False)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    # keyservice.cli.cmd_serve's call with its defaults (1 worker, forwarded-allow-ips
    # 127.0.0.1), but without the access log and at log level warning: the requests, not their
    # logging, are what these runs measure (the "as shipped" runs measure both).
    uvicorn.run(
        "bench.server:create",
        factory=True,
        host=HOST,
        port=parser.parse_args().port,
        workers=1,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()

"""The runtime: what an instance runs beside its requests starts in order and stops in reverse,
each stop bounded, so that one stuck worker cannot keep the others from stopping."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.config import Settings
from keyservice.main import create_app
from keyservice.runtime import Runtime, Worker


def _worker(name: str, log: list[str], *, stuck: bool = False, fails: bool = False) -> Worker:
    async def start() -> None:
        log.append(f"start {name}")

    async def stop() -> None:
        if stuck:
            await asyncio.Event().wait()
        if fails:
            raise RuntimeError("cannot stop")
        log.append(f"stop {name}")

    return Worker(name, start, stop)


async def test_workers_stop_in_reverse_each_within_its_bound(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = Runtime(settings, sessionmaker=sessionmaker)
    runtime.stop_seconds = 0.05
    log: list[str] = []
    runtime.add(_worker("first", log))
    runtime.add(_worker("stuck", log, stuck=True))
    runtime.add(_worker("failing", log, fails=True))
    runtime.add(_worker("last", log))
    with caplog.at_level(logging.INFO, logger="keyservice.runtime"):
        await runtime.start()
        await runtime.stop()
    assert log == [
        "start first",
        "start stuck",
        "start failing",
        "start last",
        "stop last",
        "stop first",
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert "stuck did not stop within 0.05 s" in messages
    assert "failing failed to stop" in messages
    stopped = [m.split(" in ")[0] for m in messages if m.startswith("stopped ")]
    assert stopped == ["stopped last", "stopped first"]


async def test_a_worker_that_fails_to_start_stops_those_started_before_it(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    runtime = Runtime(settings, sessionmaker=sessionmaker)
    log: list[str] = []

    async def cannot_start() -> None:
        raise RuntimeError("no")

    runtime.add(_worker("first", log))
    runtime.add(Worker("broken", cannot_start, cannot_start))
    runtime.add(_worker("never", log))
    with pytest.raises(RuntimeError):
        await runtime.start()
    assert log == ["start first", "stop first"]


async def test_an_app_on_its_own_database_runs_the_production_workers(
    settings: Settings, fresh_database_url: str, backend: str
) -> None:
    from keyservice import migrate

    await migrate.upgrade(settings, fresh_database_url)
    app = create_app(settings.model_copy(update={"database_url": fresh_database_url}))
    runtime: Runtime = app.state.runtime
    names = [worker.name for worker in runtime.workers]
    listener = ["invalidation listener"] if backend == "postgres" else []
    webhook_listener = ["webhook listener"] if backend == "postgres" else []
    assert names == [
        "database engine",
        "database probe",
        *listener,
        "rate-limit renewals",
        "webhook delivery",
        "scheduler",
        *webhook_listener,
        "usage flusher",
        "metrics sampler",
    ]
    async with app.router.lifespan_context(app):
        assert app.state.verifier is runtime.verifier
        assert runtime.verifier.usage is runtime.usage
        assert runtime.verifier.limiter is runtime.limiter

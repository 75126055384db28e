"""Degraded mode: a real PostgreSQL, of the test's own, stopped under load and started again.

While it is down, keys verified before keep verifying (for a bounded time), their usage is kept
and written when it is back; anything else gets a clean 503 (``/v1/verify``: code
``UNAVAILABLE``), never a 500 or a dropped request; ``/readyz`` says why; the log has one line
for the outage, not one per request; everything recovers without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from conftest import client_for
from factories import auth, create_application, create_key, create_tenant
from keyservice import migrate
from keyservice.availability import Availability
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.errors import DatabaseUnavailable
from keyservice.main import create_app
from keyservice.models import UsageCounter
from keyservice.ratelimit.limiter import Limiter, Refusal
from keyservice.ratelimit.policy import Limits, RatePolicy
from pgcluster import Cluster
from servers import free_port


class Load:
    """Requests of every kind, in a loop, each answer noted under the current phase."""

    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str], owner: str) -> None:
        self.client = client
        self.keys = keys
        self.owner = owner
        self.phase = "before"
        self.answers: Counter[tuple[str, str, int, str]] = Counter()
        self.allowed: Counter[str] = Counter()
        self._stop = asyncio.Event()

    async def _one(self, kind: str) -> None:
        phase = self.phase
        if kind == "uncached" and phase in ("before", "transition"):
            return  # verified for the first time during the outage
        if kind in ("plain", "limited", "uncached"):
            response = await self.client.post(
                "/v1/verify", json={"key": self.keys[kind], "endpoint": "GET /v1/contacts"}
            )
        elif kind == "forward":
            response = await self.client.get(
                "/v1/forward-auth/v1/contacts", headers=auth(self.keys["plain"])
            )
        else:
            response = await self.client.get("/v1/keys", headers=auth(self.owner))
        body = response.json() if response.content else {}
        what = body.get("code") or body.get("type") or "ok"
        if response.status_code == 503:
            assert response.headers["retry-after"].isdigit()
        self.answers[(phase, kind, response.status_code, what)] += 1
        if kind in ("plain", "forward") and response.status_code == 200:
            self.allowed["plain"] += 1

    async def run(self, worker: int) -> None:
        kinds = ["plain", "limited", "forward", "uncached", "manage"]
        n = worker
        while not self._stop.is_set():
            await self._one(kinds[n % len(kinds)])
            n += 1
            await asyncio.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()

    def seen(self, phase: str, kind: str) -> set[tuple[int, str]]:
        return {(s, w) for (p, k, s, w) in self.answers if p == phase and k == kind}


async def test_a_database_outage_under_load(
    cluster: Cluster, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate.upgrade(settings, cluster.url)
    engine = create_engine(settings, cluster.url)
    async with create_sessionmaker(engine)() as session:
        tenant = await create_tenant(session)
    await engine.dispose()

    app = create_app(
        settings.model_copy(update={"database_url": cluster.url, "usage_flush_seconds": 0.2})
    )
    offset = [0.0]  # the outage's clock, moved on by the test rather than waited for
    app.state.availability.clock = lambda: time.monotonic() + offset[0]

    async with app.router.lifespan_context(app), client_for(app) as client:
        application = await create_application(client, tenant)
        keys = {
            "plain": (await create_key(client, tenant, application["id"]))["key"],
            "limited": (
                await create_key(
                    client,
                    tenant,
                    application["id"],
                    rate_limit={"limit": 1000, "period_seconds": 1},
                )
            )["key"],
            "uncached": (await create_key(client, tenant, application["id"]))["key"],
        }
        plain_id = uuid.UUID(
            (await client.post("/v1/verify", json={"key": keys["plain"]})).json()["key"]["id"]
        )
        for kind in ("plain", "limited"):
            assert (await client.post("/v1/verify", json={"key": keys[kind]})).json()["valid"]
        load = Load(client, keys, tenant.owner_key)
        workers = [asyncio.create_task(load.run(n)) for n in range(8)]
        try:
            await asyncio.sleep(0.5)
            caplog.clear()
            with caplog.at_level(logging.INFO):
                load.phase = "transition"
                await asyncio.to_thread(cluster.stop)
                load.phase = "down"
                await asyncio.sleep(2.0)
                readyz = await client.get("/readyz")
                # Past the grace: what was cached is no longer trusted.
                offset[0] += settings.outage_grace_seconds + 1
                load.phase = "past grace"
                await asyncio.sleep(0.5)
                outage_records = list(caplog.records)
                load.phase = "restarting"
                await asyncio.to_thread(cluster.start)
                started = time.monotonic()
                while (await client.get("/readyz")).status_code != 200:
                    assert time.monotonic() - started < 15, "no recovery without a restart"
                    await asyncio.sleep(0.1)
                load.phase = "after"
                await asyncio.sleep(1.0)
        finally:
            load.stop()
            await asyncio.gather(*workers)
        recovery_records = [r for r in caplog.records if r not in outage_records]

        # Down, within the grace: the keys verified before go on; nothing else pretends to.
        assert load.seen("down", "plain") == {(200, "VALID")}
        assert load.seen("down", "limited") == {(200, "VALID")}
        assert load.seen("down", "forward") == {(200, "ok")}
        assert load.seen("down", "uncached") == {(503, "UNAVAILABLE")}
        assert load.seen("down", "manage") == {(503, "urn:keyservice:problem:database-unavailable")}
        assert readyz.status_code == 503
        assert "unreachable" in readyz.json()["detail"]
        # Past the grace, cached keys too are 503.
        assert load.seen("past grace", "plain") == {(503, "UNAVAILABLE")}
        assert load.seen("past grace", "forward") == {
            (503, "urn:keyservice:problem:database-unavailable")
        }
        # Never a 500, in any phase; the transition is one or the other answer.
        assert not [a for a in load.answers if a[2] >= 500 and a[2] != 503]
        assert load.seen("transition", "plain") <= {(200, "VALID")}
        # After: everything as before, the key never seen before included.
        assert load.seen("after", "uncached") == {(200, "VALID")}
        assert load.seen("after", "manage") == {(200, "ok")}

        # One line for the outage (and one for its end), not one per request.
        problems = [r for r in outage_records if r.levelno >= logging.WARNING]
        assert [r.getMessage().split(" (")[0] for r in problems] == ["database unreachable"]
        assert not [r for r in outage_records if r.exc_info]
        assert [
            r.getMessage() for r in recovery_records if "reachable again" in r.getMessage()
        ] != []
        assert not [r for r in recovery_records if r.levelno >= logging.WARNING]

        # Every verification of the plain key, during the outage too, is in its usage.
        await app.state.verifier.usage.flush()
        async with app.state.sessionmaker() as session:
            counted = await session.scalar(
                select(func.sum(UsageCounter.allowed)).where(UsageCounter.key_id == plain_id)
            )
        assert counted == load.allowed["plain"] + 2  # and the two before the load
        assert app.state.verifier.usage.dropped_rows == 0


async def test_limited_keys_are_limited_by_each_instance_while_the_database_is_away(
    settings: Settings,
) -> None:
    """Nothing listens on the database's port: the limiter admits the key's rate by itself, a
    window at a time, and stops once cached keys are no longer trusted."""
    unreachable = create_engine(
        settings, f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres"
    )
    now = [1000.0]
    availability = Availability(grace_seconds=60, clock=lambda: now[0])
    limiter = Limiter(
        create_sessionmaker(unreachable), clock=lambda: now[0], availability=availability
    )
    limits = Limits(rate=RatePolicy(limit=5, period_seconds=1, burst=5), monthly_quota=None)
    key_id = uuid.uuid4()
    try:
        verdicts = [(await limiter.check(key_id, limits)).refused for _ in range(6)]
        assert verdicts == [None] * 5 + [Refusal.rate]
        assert availability.down
        now[0] += 1.0  # the next window
        assert (await limiter.check(key_id, limits)).allowed
        quota = Limits(rate=None, monthly_quota=3)
        quota_key = uuid.uuid4()
        quota_verdicts = [(await limiter.check(quota_key, quota)).refused for _ in range(4)]
        assert quota_verdicts == [None, None, None, Refusal.quota]
        now[0] += 60.0  # past the grace
        with pytest.raises(DatabaseUnavailable):
            await limiter.check(key_id, limits)
    finally:
        await unreachable.dispose()

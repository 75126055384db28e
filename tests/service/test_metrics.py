"""GET /metrics: what operators watch, in Prometheus' text format, with no per-key label."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import auth, create_application, create_key, create_tenant
from keyservice import metrics
from metrics_text import UUID, _samples, _value
from servers import KEY_RE, cli_env, serving


async def test_metrics_count_verifications_requests_and_the_cache(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    before = _samples((await client.get("/metrics")).text)

    assert (await client.post("/v1/verify", json={"key": created["key"]})).json()["valid"]
    await client.post("/v1/verify", json={"key": "ks_live_nothing"})
    await client.get("/v1/forward-auth", headers=auth(created["key"]))
    await client.get(f"/v1/keys/{created['id']}", headers=tenant.headers)
    await client.get("/v1/keys/not-a-route/at-all/42")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("keyservice_verifications_total", path="verify", code="VALID") == 1
    assert grew("keyservice_verifications_total", path="verify", code="MALFORMED") == 1
    assert grew("keyservice_verifications_total", path="forward_auth", code="VALID") == 1
    assert grew("keyservice_verifications_total", path="management", code="VALID") >= 1
    assert grew("keyservice_key_cache_requests_total", result="hit") >= 2
    count = "keyservice_http_request_duration_seconds_count"
    assert grew(count, route="/v1/verify", method="POST", status="200") == 2
    # The route's template, never the path with its ids; a path of no route is not a label.
    assert grew(count, route="/v1/keys/{key_id}", method="GET", status="200") == 1
    assert grew(count, route="unmatched", method="GET", status="404") == 1
    assert _value(after, "keyservice_key_cache_entries") >= 1
    # No label names a key, an account or any other id.
    assert not UUID.search(response.text)
    assert created["key"] not in response.text


async def test_metrics_may_require_a_token(
    session: AsyncSession, make_app: Callable[..., FastAPI]
) -> None:
    app = make_app(metrics_token=SecretStr("a-long-metrics-token"))
    async with client_for(app) as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["type"] == "urn:keyservice:problem:metrics-unauthorized"
        wrong = await client.get("/metrics", headers=auth("a-long-metrics-tokeN"))
        assert wrong.status_code == 401
        allowed = await client.get("/metrics", headers=auth("a-long-metrics-token"))
        assert allowed.status_code == 200
        assert "keyservice_verifications_total" in allowed.text


def test_workers_report_their_metrics_together(tmp_path: Path, postgres_url: str) -> None:
    """With two workers, a scrape answered by either reports both workers' counts."""
    env = cli_env(tmp_path) | {"KEYSERVICE_DATABASE_URL": postgres_url}
    bootstrap = subprocess.run(
        [sys.executable, "-m", "keyservice", "bootstrap", "--if-empty"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    key_match = KEY_RE.search(bootstrap.stdout)
    assert key_match, bootstrap.stderr
    with serving(tmp_path, env, "--workers", "2") as server:
        # Fresh connections, so that both workers take some.
        for _ in range(40):
            httpx.post(
                f"{server.base_url}/v1/verify",
                json={"key": key_match.group(0)},
                headers={"connection": "close"},
            )
        totals = set()
        for _ in range(6):
            text = httpx.get(f"{server.base_url}/metrics", headers={"connection": "close"}).text
            valid = _value(
                _samples(text), "keyservice_verifications_total", path="verify", code="VALID"
            )
            totals.add(valid)
        assert totals == {40.0}


async def test_metrics_can_be_off(
    session: AsyncSession, make_app: Callable[..., FastAPI], client: httpx.AsyncClient
) -> None:
    before = _samples((await client.get("/metrics")).text)
    app = make_app(metrics_enabled=False)
    try:
        async with client_for(app) as off:
            tenant = await create_tenant(session)
            assert (await off.get("/v1/account", headers=tenant.headers)).status_code == 200
            assert (await off.get("/metrics")).status_code == 404
    finally:
        metrics.configure(enabled=True)
    after = _samples((await client.get("/metrics")).text)
    name = "keyservice_verifications_total"
    assert _value(after, name, path="management", code="VALID") == _value(
        before, name, path="management", code="VALID"
    )

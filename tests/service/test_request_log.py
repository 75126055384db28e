"""One line per request, with its id, route, status, latency, key and account, written by a
thread; never a secret. ``keyservice serve`` writes them in place of uvicorn's access log."""

from __future__ import annotations

import io
import json
import logging
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

import secrets_seen
from factories import create_application, create_key, create_tenant
from keyservice import logs
from servers import KEY_RE, cli_env, serving


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "keyservice.access"]


async def test_every_request_has_an_id_and_one_line(
    client: httpx.AsyncClient, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="keyservice.access"):
        kept = await client.get(
            f"/v1/keys/{created['id']}",
            headers={**tenant.headers, "X-Request-Id": "trace-42.a_b"},
        )
        made = await client.post(
            "/v1/verify",
            json={"key": created["key"]},
            headers={"X-Request-Id": "not a sane id"},
        )
        anonymous = await client.get("/v1/account")
    assert kept.headers["x-request-id"] == "trace-42.a_b"
    assert made.headers["x-request-id"] != "not a sane id"
    assert len(made.headers["x-request-id"]) == 32
    first, second, third = _lines(caplog)
    assert first.request_id == "trace-42.a_b"  # type: ignore[attr-defined]
    assert first.route == "/v1/keys/{key_id}"  # type: ignore[attr-defined]
    assert first.status == 200  # type: ignore[attr-defined]
    assert first.account_id == str(tenant.account.id)  # type: ignore[attr-defined]
    assert first.key_id is not None  # type: ignore[attr-defined]
    assert second.route == "/v1/verify"  # type: ignore[attr-defined]
    assert second.key_id == created["id"]  # type: ignore[attr-defined]
    assert second.request_id == made.headers["x-request-id"]  # type: ignore[attr-defined]
    assert third.status == 401  # type: ignore[attr-defined]
    assert third.key_id is None  # type: ignore[attr-defined]
    assert anonymous.status_code == 401
    for record in (first, second, third):
        line = json.loads(logs.JsonFormatter().format(record))
        assert line["logger"] == "keyservice.access"
        assert line["duration_ms"] >= 0
        assert created["key"] not in json.dumps(line)


def test_lines_are_written_by_a_thread_of_their_own() -> None:
    stream = io.StringIO()
    handler = logs.BackgroundHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    writers: list[str] = []
    original = handler.format

    def format_noting_the_thread(record: logging.LogRecord) -> str:
        writers.append(threading.current_thread().name)
        return original(record)

    handler.format = format_noting_the_thread  # type: ignore[method-assign]
    for n in range(3):
        handler.emit(logging.makeLogRecord({"name": "t", "msg": "line %d", "args": (n,)}))
    handler.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["line 0", "line 1", "line 2"]
    assert set(writers) == {"keyservice-log-writer"}


def test_serve_writes_json_lines_and_no_uvicorn_access_line(tmp_path: Path) -> None:
    env = cli_env(tmp_path) | {"KEYSERVICE_LOG_FORMAT": "json"}
    with serving(tmp_path, env) as server:
        [key] = KEY_RE.findall(server.output())[:1]
        headers = {"Authorization": f"Bearer {key}", "X-Request-Id": "from-the-test"}
        assert httpx.get(f"{server.base_url}/v1/account", headers=headers).status_code == 200
        httpx.get(f"{server.base_url}/v1/account", headers={"Authorization": "Bearer nope"})
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "keyservice.access"]
    mine = [line for line in access if line.get("request_id") == "from-the-test"]
    assert len(mine) == 1
    assert mine[0]["route"] == "/v1/account"
    assert mine[0]["status"] == 200
    assert mine[0]["key_id"]
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    # Every line of the process is JSON, and none holds the key (it was printed once, to the
    # terminal, before the server started logging).
    assert not [line for line in lines if key in json.dumps(line)]


def test_the_suites_secret_check_finds_a_key_or_its_start() -> None:
    """The check every run ends with (conftest's ``no_secret_in_any_log``) can fail."""
    key = "ks_live_4eC39HqLyjWDarjtT1zdp7dc3jd9Qk1aBcDeFg"
    secrets_seen.remember(key)
    secrets_seen.remember("a password of the suite")
    lines = [
        "verified key ks_live_4eC39HqL (truncated)",
        "login with a password of the suite",
        "nothing here but ks_live_ZZZZZZZZZZZZ",
    ]
    assert secrets_seen.leaks(lines) == lines[:2]

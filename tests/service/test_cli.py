"""What a newcomer sees: `keyservice serve` on an empty database migrates, prints a first owner
key once with a curl to try, and serves; `keyservice bootstrap` does the same on demand."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import client_for
from factories import auth
from keyservice.cli import build_parser
from keyservice.config import Settings
from keyservice.main import create_app
from servers import KEY_RE, cli_env, free_port


def _cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyservice", *args],
        env=cli_env(tmp_path) if env is None else env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_serve_on_an_empty_database_prints_a_working_first_key(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "serve", "--port", str(port)],
            env=cli_env(tmp_path),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        output = log.read_text()
        [key] = KEY_RE.findall(output.split("Try it")[0])
        assert f'curl -s {base}/v1/account -H "Authorization: Bearer {key}"' in output
        response = httpx.get(f"{base}/v1/account", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert response.json()["name"] == "My company"
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
    # The key is printed to the terminal, never through a log line.
    assert not [line for line in output.splitlines() if key in line and "INFO" in line]

    # A second start finds the account and prints no key.
    assert not KEY_RE.search(_cli(tmp_path, "bootstrap", "--if-empty").stdout)


def test_bootstrap_on_demand_creates_another_account(tmp_path: Path) -> None:
    _cli(tmp_path, "migrate")
    first = KEY_RE.findall(_cli(tmp_path, "bootstrap", "--email", "a@example.com").stdout)
    second = KEY_RE.findall(
        _cli(tmp_path, "bootstrap", "--email", "b@example.com", "--account-name", "B").stdout
    )
    assert len(first) >= 1
    assert len(second) >= 1
    assert first[0] != second[0]


@pytest.mark.parametrize("command", ["serve", "migrate", "bootstrap"])
def test_production_without_a_database_says_so_in_one_line(tmp_path: Path, command: str) -> None:
    env = cli_env(tmp_path) | {"KEYSERVICE_MODE": "production"}
    del env["KEYSERVICE_DATABASE_URL"]
    result = _cli(tmp_path, command, env=env, check=False)
    assert result.returncode == 2
    assert result.stderr == (
        "keyservice: KEYSERVICE_DATABASE_URL must be set in production mode "
        "(the embedded SQLite default is for development)\n"
    )
    assert result.stdout == ""
    assert not list(tmp_path.iterdir())  # nothing was created


def test_a_bad_setting_is_named_without_a_traceback(tmp_path: Path) -> None:
    env = cli_env(tmp_path) | {
        "KEYSERVICE_DB_POOL_SIZE": "lots",
        "KEYSERVICE_SCOPES": "contacts:read,leads",
    }
    result = _cli(tmp_path, "serve", env=env, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "keyservice: KEYSERVICE_SCOPES: invalid scope 'leads': expected resource:action",
        "keyservice: KEYSERVICE_DB_POOL_SIZE: input should be a valid integer, unable to parse "
        "string as an integer",
    ]
    assert "lots" not in result.stderr


def test_serve_on_a_busy_port_says_how_to_choose_another(tmp_path: Path) -> None:
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", 0))
        other_server.listen()
        port = other_server.getsockname()[1]
        result = _cli(tmp_path, "serve", "--port", str(port), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"keyservice: port {port} is in use: stop the other server or choose another port "
        f"(make run PORT={port + 1}, or keyservice serve --port {port + 1})\n"
    )
    # Refused before anything started: no database, no first key.
    assert result.stdout == ""
    assert not (tmp_path / "keyservice.db").exists()


def test_help_reads_as_plain_text(tmp_path: Path) -> None:
    result = _cli(tmp_path, "--help")
    assert result.stdout.startswith("usage: keyservice")
    assert "issues, verifies, rate-limits and meters API keys" in result.stdout
    texts = [result.stdout]
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    texts += [command.format_help() for command in commands.choices.values()]
    for text in texts:
        assert "`" not in text, text


def _refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"keyservice: {message}"
    assert "Traceback" not in result.stderr
    assert not KEY_RE.search(result.stdout)


async def _get(tmp_path: Path, path: str, headers: dict[str, str]) -> httpx.Response:
    """A request to an instance on the commands' database."""
    settings = Settings(_env_file=None, database_url=cli_env(tmp_path)["KEYSERVICE_DATABASE_URL"])
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        return await client.get(path, headers=headers)


async def _login(tmp_path: Path, email: str, password: str) -> int:
    settings = Settings(_env_file=None, database_url=cli_env(tmp_path)["KEYSERVICE_DATABASE_URL"])
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        response = await client.post("/v1/sessions", json={"email": email, "password": password})
        return response.status_code


async def test_an_owner_who_lost_their_key_gets_a_new_one(tmp_path: Path) -> None:
    _cli(tmp_path, "migrate")
    [lost] = set(KEY_RE.findall(_cli(tmp_path, "bootstrap", "--email", "Ann@example.com").stdout))
    account = (await _get(tmp_path, "/v1/account", auth(lost))).json()
    # A member of the account, who is no owner.
    settings = Settings(_env_file=None, database_url=cli_env(tmp_path)["KEYSERVICE_DATABASE_URL"])
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        response = await client.post(
            "/v1/account/members", headers=auth(lost), json={"email": "max@example.com"}
        )
        assert response.status_code == 201

    result = _cli(tmp_path, "issue-owner-key", "--email", "ann@example.com")
    [key] = set(KEY_RE.findall(result.stdout))
    assert key != lost
    response = await _get(tmp_path, "/v1/account", auth(key))
    assert response.status_code == 200
    assert response.json()["id"] == account["id"]
    # The account's audit trail says so, without the secret.
    events = (await _get(tmp_path, "/v1/audit-events", auth(key))).json()["data"]
    assert events[0]["action"] == "key.created"
    assert events[0]["details"]["scopes"] == ["keyservice:*"]
    assert events[0]["details"]["via"] == "keyservice command on the server"
    assert key not in str(events)
    # And its events: the new key, created (after the lost one, at bootstrap).
    events = (await _get(tmp_path, "/v1/events?type=key.created", auth(key))).json()
    assert [e["data"]["name"] for e in events["data"]] == [
        "Owner key (issued on the server)",
        "Owner key (bootstrap)",
    ]
    assert key not in str(events)
    assert lost not in str(events)

    result = _cli(
        tmp_path, "issue-owner-key", "--email", "ann@example.com", "--account-id", account["id"]
    )
    assert KEY_RE.search(result.stdout)

    _refused(
        _cli(tmp_path, "issue-owner-key", "--email", "nobody@example.com", check=False),
        "no user has the email nobody@example.com",
    )
    _refused(
        _cli(tmp_path, "issue-owner-key", "--email", "max@example.com", check=False),
        "max@example.com is not the owner of any account",
    )
    other = "00000000-0000-4000-8000-000000000000"
    _refused(
        _cli(
            tmp_path,
            "issue-owner-key",
            "--email",
            "ann@example.com",
            "--account-id",
            other,
            check=False,
        ),
        f"ann@example.com is not an owner of the account {other}",
    )


async def test_set_password_from_the_server(tmp_path: Path) -> None:
    _cli(tmp_path, "migrate")
    [key] = set(KEY_RE.findall(_cli(tmp_path, "bootstrap", "--email", "ann@example.com").stdout))
    assert await _login(tmp_path, "ann@example.com", "a long new password") == 401

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keyservice",
            "set-password",
            "--email",
            "ann@example.com",
            "--password-stdin",
        ],
        env=cli_env(tmp_path),
        cwd=tmp_path,
        input="a long new password\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "a long new password" not in result.stdout + result.stderr
    assert await _login(tmp_path, "ann@example.com", "a long new password") == 201
    events = (await _get(tmp_path, "/v1/audit-events", auth(key))).json()["data"]
    assert events[0]["action"] == "user.password_set"
    assert "a long new password" not in str(events)

    # Prompted twice (no terminal here, so the prompts read standard input).
    def prompted(answers: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keyservice", "set-password", "--email", "ann@example.com"],
            env=cli_env(tmp_path),
            cwd=tmp_path,
            input=answers,
            capture_output=True,
            text=True,
            timeout=60,
            start_new_session=True,  # no controlling terminal to prompt on
        )

    _refused(
        prompted("another long one\nanother long 1\n"),
        "the two passwords differ; nothing changed",
    )
    assert prompted("another long one\nanother long one\n").returncode == 0
    assert await _login(tmp_path, "ann@example.com", "another long one") == 201
    assert await _login(tmp_path, "ann@example.com", "a long new password") == 401

    _refused(prompted("too short\ntoo short\n"), "a password has 12 to 256 characters")
    _refused(
        _cli(
            tmp_path,
            "set-password",
            "--email",
            "nobody@example.com",
            "--password-stdin",
            check=False,
        ),
        "no user has the email nobody@example.com",
    )


def test_a_database_that_cannot_be_reached_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    # Nothing listens on that port; the URL's password must not be repeated.
    env["KEYSERVICE_DATABASE_URL"] = (
        f"postgresql+asyncpg://postgres:hunter2hunter2@127.0.0.1:{free_port()}/keyservice"
    )
    for command in (
        ["migrate"],
        ["issue-owner-key", "--email", "ann@example.com"],
        ["set-password", "--email", "ann@example.com", "--password-stdin"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "keyservice", *command],
            env=env,
            cwd=tmp_path,
            input="a long new password\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr
        assert "hunter2hunter2" not in result.stderr
        last = result.stderr.splitlines()[-1]
        assert last.startswith("keyservice: cannot use the database (")
        assert last.endswith(
            "check KEYSERVICE_DATABASE_URL and that the database server is running"
        )

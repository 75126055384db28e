"""The client's tests run against a real keyservice: ``keyservice serve`` in a subprocess, on a
fresh SQLite database and a free loopback port, started once per session. Its first owner key
(printed once on start) is the tests' management key; everything else is created through the
client itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from keyservice_client import AsyncKeyservice
from tests.support import FAST_RETRY, KEY_RE, Scripted, Server, TwoAccounts, free_port

STARTUP_SECONDS = 60


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("keyservice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSERVICE_")}
    env["KEYSERVICE_DATABASE_URL"] = f"sqlite+aiosqlite:///{directory / 'keyservice.db'}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "serve", "--port", str(port)],
            env=env,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"keyservice did not start:\n{log.read_text()}", pytrace=False)
            time.sleep(0.1)
        [owner_key] = set(KEY_RE.findall(log.read_text().split("Try it")[0]))
        yield Server(url, owner_key, env, directory)
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="session")
async def owner(server: Server) -> AsyncIterator[AsyncKeyservice]:
    """A client holding the owner key of the server's first account."""
    async with AsyncKeyservice(server.url, server.owner_key, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture(scope="session")
async def anonymous(server: Server) -> AsyncIterator[AsyncKeyservice]:
    """A client without a key: what a service that does not authenticate to /v1/verify has."""
    async with AsyncKeyservice(server.url, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture(scope="session")
async def two_accounts(server: Server) -> TwoAccounts:
    email = "two-accounts@example.com"
    key = server.new_account(email)
    server.new_account(email)
    async with AsyncKeyservice(server.url, key, retry=FAST_RETRY) as user:
        first, second = [a.account_id for a in (await user.users.me()).accounts]
    return TwoAccounts(email, key, (first, second))


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    remote = Scripted()
    yield remote
    remote.close()

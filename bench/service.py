"""The service under test: a throw-away PostgreSQL database and bench/server.py under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from types import TracebackType

import asyncpg
import httpx

from bench import HOST, BenchError, pin_to
from bench.results import Counters
from bench.server import COUNTERS_PATH
from keyservice import migrate
from keyservice.accounts import service as accounts_service
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker
from keyservice.keys.service import new_key
from keyservice.models import Application, KeyKind
from keyservice.security import Environment

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TIMEOUT = 30.0
SETUP_TIMEOUT = 60.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SETTLE_TIMEOUT = 30.0
SETTLE_INTERVAL = 0.1
SETTLE_READS = 3


def _asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


async def _admin(admin_url: str, statement: str) -> str:
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {admin_url.split('@')[-1]} ({exc}); set "
            "KEYSERVICE_BENCH_POSTGRES_URL"
        ) from None
    try:
        return str(await connection.fetchval(statement, timeout=ADMIN_TIMEOUT) or "")
    finally:
        await connection.close()


def admin(admin_url: str, statement: str) -> str:
    """Run one statement on the server's maintenance database; the first column of its answer."""
    return asyncio.run(asyncio.wait_for(_admin(admin_url, statement), ADMIN_TIMEOUT + 15))


@contextlib.contextmanager
def database(admin_url: str) -> Iterator[str]:
    """A new database on the server of ``admin_url`` (dropped afterwards): its URL."""
    name = f"keyservice_bench_{secrets.token_hex(6)}"
    admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _prepare(url: str) -> str:
    settings = Settings(mode="production", database_url=url)
    await migrate.upgrade(settings, url)
    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session:
            _, _, owner_key = await accounts_service.bootstrap(
                session,
                account_name="Bench",
                owner_email="bench@example.com",
                password=None,
                key_prefix=settings.key_prefix,
            )
            await session.commit()
    finally:
        await engine.dispose()
    return owner_key


def prepare(url: str) -> str:
    """Migrate the database and bootstrap an account: its owner key."""
    return asyncio.run(asyncio.wait_for(_prepare(url), SETUP_TIMEOUT))


async def _create_keys(
    url: str,
    application_id: str,
    count: int,
    *,
    scopes: Sequence[str],
    rate_limit: dict[str, int],
) -> list[str]:
    settings = Settings(mode="production", database_url=url)
    engine = create_engine(settings, url)
    try:
        async with create_sessionmaker(engine)() as session:
            application = await session.get(Application, uuid.UUID(application_id))
            if application is None:
                raise BenchError(f"no application {application_id}")
            secrets_ = []
            for number in range(count):
                key, secret = new_key(
                    prefix=settings.key_prefix,
                    kind=KeyKind.application,
                    name=f"Bench key {number + 1}",
                    environment=Environment.live,
                    scopes=scopes,
                    expires_at=None,
                    account_id=application.account_id,
                    application_id=application.id,
                )
                key.rate_limit = rate_limit["limit"]
                key.rate_period_seconds = rate_limit["period_seconds"]
                key.rate_burst = rate_limit["burst"]
                session.add(key)
                secrets_.append(secret)
            await session.commit()
    finally:
        await engine.dispose()
    return secrets_


def create_keys(
    url: str,
    application_id: str,
    count: int,
    *,
    scopes: Sequence[str],
    rate_limit: dict[str, int],
) -> list[str]:
    """``count`` keys of an application, each with ``rate_limit`` (``limit``, ``period_seconds``,
    ``burst``), written straight to the database with keyservice's own ``new_key``: thousands of
    keys in seconds rather than thousands of API calls. Their secrets, in order."""
    return asyncio.run(
        asyncio.wait_for(
            _create_keys(url, application_id, count, scopes=scopes, rate_limit=rate_limit),
            SETUP_TIMEOUT,
        )
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a running process, from /proc (None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may hold spaces: utime and stime are fields 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """bench/server.py under uvicorn in a subprocess, and a client for setup and counters.

    ``settings`` are ``KEYSERVICE_*`` variables for the service; the caller's own are not passed
    on, so that a run measures the defaults unless a phase asks otherwise.
    """

    def __init__(
        self,
        database_url: str,
        *,
        cpus: frozenset[int] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.cpus = cpus
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSERVICE_")}
        self.env |= {"KEYSERVICE_MODE": "production", "KEYSERVICE_DATABASE_URL": database_url}
        self.env |= settings or {}
        self.command = [
            *(sys.executable, "-m", "uvicorn", "bench.server:create", "--factory"),
            *("--app-dir", str(ROOT), "--host", HOST, "--port", str(self.port)),
            *("--workers", "1", "--no-access-log", "--log-level", "warning"),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile("w+")
        # trust_env=False: no proxy from the environment may see this traffic.
        self.client = httpx.Client(base_url=self.base_url, timeout=10, trust_env=False)

    def __enter__(self) -> Server:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to(self.cpus),
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/readyz").status_code == 200:
                    return
            time.sleep(0.2)
        raise BenchError(f"the server was not ready within {START_TIMEOUT:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        self._log.close()

    def log(self) -> str:
        """The end of the server's output."""
        self._log.seek(0)
        return self._log.read()[-4000:]

    def _counters(self) -> dict[str, int]:
        response = self.client.get(COUNTERS_PATH)
        response.raise_for_status()
        return {name: int(value) for name, value in response.json().items()}

    def counters(self) -> Counters:
        data = self._counters()
        return Counters(**{f.name: data[f.name] for f in fields(Counters)})

    def settle(self) -> None:
        """Wait until the server has finished the requests it was sent: a load generator that
        stops at its deadline abandons those in flight, which the server still answers (slow
        ones would otherwise spill into the next run). Done when its verifications stop moving."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last, still = self.counters().verifications, 0
        while still < SETTLE_READS and time.monotonic() < deadline:
            time.sleep(SETTLE_INTERVAL)
            now = self.counters().verifications
            still = still + 1 if now == last else 0
            last = now

    def cache_entries(self) -> int:
        """Keys in the instance's verification cache now."""
        return self._counters()["cache_entries"]

    def cpu_seconds(self) -> float | None:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)

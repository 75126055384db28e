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
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import asyncpg
import httpx

from bench import HOST, BenchError, pin_to
from bench.results import Counters
from keyservice import migrate
from keyservice.accounts import service as accounts_service
from keyservice.config import Settings
from keyservice.db import create_engine, create_sessionmaker

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TIMEOUT = 30.0
SETUP_TIMEOUT = 60.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


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

    def counters(self) -> Counters:
        response = self.client.get("/bench/counters")
        response.raise_for_status()
        data = response.json()
        return Counters(
            sql_statements=int(data["sql_statements"]),
            verified=int(data["verified"]),
            refused=int(data["refused"]),
        )

    def cpu_seconds(self) -> float | None:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)

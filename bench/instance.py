"""An instance of keyservice under test, in a subprocess: started, read, stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from bench import HOST, BenchError, pin_to
from bench.database import ENCRYPTION_KEY
from bench.server import COUNTERS_PATH, Counters

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
# Idle: less CPU time than IDLE_CPU_SECONDS (at most one 10 ms clock tick) in each of SETTLE_READS
# tenths of a second in a row.
SETTLE_TIMEOUT = 30.0
SETTLE_INTERVAL = 0.1
SETTLE_READS = 3
IDLE_CPU_SECONDS = 0.02


class Server:
    """A running instance on a free port of 127.0.0.1, and a client for setup and counters."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, counted: bool) -> None:
        self.process = process
        self.base_url = f"http://{HOST}:{port}"
        # Whether it is bench/server.py, with counters.
        self.counted = counted
        # trust_env=False: no proxy from the environment may see this traffic.
        self.client = httpx.Client(base_url=self.base_url, timeout=10, trust_env=False)

    def counters(self) -> Counters:
        response = self.client.get(COUNTERS_PATH)
        response.raise_for_status()
        return Counters(**response.json())

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process, from /proc."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        # Fields after the command name, which may hold spaces: utime and stime are 14 and 15.
        values = stat.rsplit(")", 1)[1].split()
        return (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self) -> None:
        """Wait until the server is idle: wrk abandons the requests in flight at its deadline,
        which the server still answers, and slow ones would otherwise spill into the next run."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last, idle = self.cpu_seconds(), 0
        while idle < SETTLE_READS and time.monotonic() < deadline:
            time.sleep(SETTLE_INTERVAL)
            now = self.cpu_seconds()
            idle = idle + 1 if now - last < IDLE_CPU_SECONDS else 0
            last = now


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(
    database_url: str,
    *,
    cpus: frozenset[int] | None,
    as_shipped: bool = False,
    settings: Mapping[str, str] | None = None,
    serve_args: Sequence[str] = (),
) -> Iterator[Server]:
    """bench/server.py on ``database_url`` until the block ends; ``as_shipped``: keyservice
    started exactly as ``keyservice serve`` starts it (its log, access log included, goes to a
    file), without the bench's counters. The service runs with default settings: the caller's
    own ``KEYSERVICE_*`` variables are not passed on, ``settings`` are (``KEYSERVICE_*`` variables),
    and ``serve_args`` go to ``keyservice serve``."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSERVICE_")}
    env |= {
        "KEYSERVICE_MODE": "production",
        "KEYSERVICE_DATABASE_URL": database_url,
        "KEYSERVICE_ENCRYPTION_KEY": ENCRYPTION_KEY,
    }
    env |= dict(settings or {})
    keyservice = [sys.executable, "-m", "keyservice", "serve", "--host", HOST, "--port", str(port)]
    command = (
        [*keyservice, *serve_args]
        if as_shipped
        else [sys.executable, "-m", "bench.server", "--port", str(port)]
    )
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to(cpus),
        )
        server = Server(process, port, counted=not as_shipped)
        try:
            _wait_ready(server, log)
            yield server
        finally:
            server.client.close()
            # As a process manager stops it: its lifespan ends and writes its last usage flush.
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)


def _wait_ready(server: Server, log: IO[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with contextlib.suppress(httpx.TransportError):
            if server.client.get("/readyz").status_code == 200:
                return
        time.sleep(0.2)
    log.seek(0)
    raise BenchError(
        f"the server did not start within {START_TIMEOUT:.0f} s:\n{log.read()[-4000:]}"
    )

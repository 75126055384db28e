"""A real ``keyservice serve`` in a subprocess, on a free loopback port, for the tests that must
see what a user runs (its logging, its workers)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

# The repository's root: README.md, openapi/, deploy/.
REPOSITORY = Path(__file__).resolve().parents[1]
# A key as a new deployment prints it (the default prefix, live).
KEY_RE = re.compile(r"ks_live_[0-9A-Za-z]{38}")
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)


def cli_env(directory: Path) -> dict[str, str]:
    """The environment of a keyservice command: none of the caller's KEYSERVICE_ settings, and
    a SQLite database of its own in ``directory``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSERVICE_")}
    env["KEYSERVICE_DATABASE_URL"] = f"sqlite+aiosqlite:///{directory / 'keyservice.db'}"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def serving(directory: Path, env: dict[str, str], *args: str) -> Iterator[Server]:
    """``keyservice serve ARGS`` until the block ends; its stdout and stderr in one log."""
    port = free_port()
    log = directory / f"serve-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "serve", "--port", str(port), *args],
            env=env,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(base_url=f"http://127.0.0.1:{port}", log=log, process=process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, server.output()
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)

"""A real ``keyservice serve`` in a subprocess, on a free loopback port, for the tests that must
see what a user runs (its logging, its workers)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base_url: str
    log: Path

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
    server = Server(base_url=f"http://127.0.0.1:{port}", log=log)
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

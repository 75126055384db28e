"""A PostgreSQL cluster of a test's own, on its own port: for tests that stop the database
(never the shared server) and start it again."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import free_port


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    return Path(found).parent if found else None


@dataclass
class Cluster:
    """A PostgreSQL cluster on its own port and directory, started and stopped by the test."""

    bin: Path
    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *command], check=True, capture_output=True, timeout=60, cwd=self.directory
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.directory / "data"), "-A", "trust",
            "-U", "postgres", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-o", options,
            "-l", str(self.directory / "log"), "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w", "stop"
        )


@contextlib.contextmanager
def own_cluster(*, required: bool) -> Iterator[Cluster]:
    """A new cluster, started; stopped and removed afterwards, whatever state the test left it
    in. Without PostgreSQL's server binaries: a failure if ``required``, else a skip."""
    binaries = _postgres_bin()
    if binaries is None:
        message = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="keyservice-cluster-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    cluster = Cluster(bin=binaries, directory=directory, port=free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if (directory / "data" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)

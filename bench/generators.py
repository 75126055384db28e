"""Load generators, each a separate process on at most one core: wrk, else bench/loadgen.py."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench import HOST, BenchError, pin_to, say
from bench.results import LoadResult, Target

BENCH_DIR = Path(__file__).resolve().parent
# What a load generator gets beyond its phase's duration before it is killed.
GRACE_SECONDS = 30
INSTALL_TIMEOUT = 120


class LoadGenerator(Protocol):
    name: str

    def describe(self) -> str:
        """The tool and its parameters, for the report."""
        ...

    def run(self, target: Target, port: int, seconds: int) -> tuple[LoadResult, float]:
        """Load ``target`` on 127.0.0.1:``port``; the result and the CPU seconds it took."""
        ...


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def bodies_file(target: Target) -> Iterator[Path | None]:
    if not target.bodies:
        yield None
        return
    with tempfile.NamedTemporaryFile("w", prefix="keyservice-bench-", suffix=".txt") as file:
        file.write("".join(body + "\n" for body in target.bodies))
        file.flush()
        yield Path(file.name)


def run_pinned(
    command: list[str], *, seconds: int, cpus: frozenset[int] | None, env: dict[str, str]
) -> tuple[str, float]:
    """Run a load generator to its end; its output and the CPU seconds it used."""
    # A waited-for child's CPU time shows in RUSAGE_CHILDREN; the server is not waited for yet.
    cpu_before = children_cpu_seconds()
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + GRACE_SECONDS,
            env=env,
            preexec_fn=pin_to(cpus),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{command[0]} did not finish in {seconds + GRACE_SECONDS} s") from None
    if completed.returncode != 0:
        error = completed.stderr.strip()[-2000:]
        raise BenchError(f"{' '.join(command)} failed ({completed.returncode}):\n{error}")
    return completed.stdout, children_cpu_seconds() - cpu_before


@dataclass
class Wrk:
    executable: str
    connections: int
    cpus: frozenset[int] | None
    name: str = "wrk"
    version: str = field(init=False)

    def __post_init__(self) -> None:
        # `wrk -v` prints its version, then its usage (no URL given) and exits 1.
        probe = subprocess.run(
            [self.executable, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
        match = re.search(r"wrk (\S+)", probe.stdout)
        self.version = match.group(1) if match else "(unknown version)"

    def command(self, target: Target, port: int, seconds: int) -> list[str]:
        # One thread: wrk then uses one core at most, and the server has the other.
        command = [self.executable, "-t1", f"-c{self.connections}", f"-d{seconds}s"]
        command += ["--timeout", "5s", "--latency"]
        if target.bodies:
            if target.method != "POST":
                raise BenchError("bench/verify.lua sends POST requests only")
            command += ["-s", str(BENCH_DIR / "verify.lua")]
        return [*command, f"http://{HOST}:{port}{target.path}"]

    def describe(self) -> str:
        return (
            f"wrk {self.version}, `wrk -t1 -c{self.connections} -d<seconds>s --timeout 5s "
            "--latency` (request bodies through `-s bench/verify.lua`)"
        )

    def run(self, target: Target, port: int, seconds: int) -> tuple[LoadResult, float]:
        with bodies_file(target) as path:
            env = dict(os.environ)
            if path is not None:
                env["BENCH_BODIES"] = str(path)
            command = self.command(target, port, seconds)
            output, cpu = run_pinned(command, seconds=seconds, cpus=self.cpus, env=env)
        return parse_wrk(output), cpu


TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * TIME_UNITS_MS[unit]


def parse_wrk(output: str) -> LoadResult:
    """Requests, requests/s, p50 and p99 (``--latency``) and errors from wrk's report."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", output)
    percentiles = {
        int(p): _ms(value, unit)
        for p, value, unit in re.findall(
            r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE
        )
    }
    if total is None or rps is None or set(percentiles) != {50, 99}:
        raise BenchError(f"could not read wrk's report:\n{output}")
    errors = 0
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets is not None:
        errors += sum(int(n) for n in sockets.groups())
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if status is not None:
        errors += int(status.group(1))
    return LoadResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        errors=errors,
    )


@dataclass
class PythonLoadGenerator:
    """bench/loadgen.py: asyncio (uvloop where installed) in one process."""

    connections: int
    cpus: frozenset[int] | None
    name: str = "bench/loadgen.py"

    def describe(self) -> str:
        try:
            loop = f"uvloop {importlib.metadata.version('uvloop')}"
        except importlib.metadata.PackageNotFoundError:
            loop = "asyncio"
        return (
            f"bench/loadgen.py (wrk is not installed), Python {platform.python_version()} with "
            f"{loop}, 1 process, {self.connections} keep-alive connections with one request in "
            "flight each"
        )

    def run(self, target: Target, port: int, seconds: int) -> tuple[LoadResult, float]:
        with bodies_file(target) as path:
            command = [sys.executable, str(BENCH_DIR / "loadgen.py"), "--host", HOST]
            command += ["--port", str(port), "--method", target.method, "--path", target.path]
            command += ["--connections", str(self.connections), "--duration", str(seconds)]
            if path is not None:
                command += ["--bodies", str(path)]
            output, cpu = run_pinned(command, seconds=seconds, cpus=self.cpus, env=dict(os.environ))
        data = json.loads(output)
        result = LoadResult(
            requests=int(data["requests"]),
            seconds=float(data["seconds"]),
            rps=float(data["rps"]),
            p50_ms=float(data["p50_ms"]),
            p99_ms=float(data["p99_ms"]),
            errors=int(data["errors"]) + int(data["non_2xx"]),
        )
        return result, cpu


def install_wrk() -> str | None:
    """Try Debian's wrk package, as root where apt-get exists; failing only means the fallback."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # A fresh image has no package lists yet: refresh them only if the first try fails.
    for command in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        say(f"bench: {' '.join(command)}")
        try:
            done = subprocess.run(
                command, capture_output=True, timeout=INSTALL_TIMEOUT, env=env, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0 and command[1] == "install":
            return shutil.which("wrk")
    return None


def choose(
    choice: str, *, connections: int, cpus: frozenset[int] | None, install: bool
) -> LoadGenerator:
    """``auto``: wrk if installed or installable, else bench/loadgen.py; ``wrk``; ``python``."""
    if choice != "python":
        executable = shutil.which("wrk")
        if executable is None and install:
            executable = install_wrk()
        if executable is not None:
            return Wrk(executable, connections, cpus)
        if choice == "wrk":
            raise BenchError("wrk is not installed (and could not be installed)")
        say("bench: wrk is not available; using bench/loadgen.py")
    return PythonLoadGenerator(connections, cpus)

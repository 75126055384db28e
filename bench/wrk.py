"""wrk, the load generator: one process per instance loaded, on the load generator's CPU."""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError, pin_to

SCRIPT = Path(__file__).with_name("wrk.lua")
# What wrk gets beyond its duration before it is killed.
GRACE_SECONDS = 30


@dataclass(frozen=True)
class Load:
    """What wrk saw: bench/wrk.lua's report."""

    requests: int
    seconds: float
    # Socket errors, timeouts and 4xx/5xx answers.
    errors: int
    p50_ms: float
    p99_ms: float
    # Answers to POSTs by their `code` (`VALID`, `RATE_LIMITED`, ...).
    codes: dict[str, int]
    # The accuracy run's: the first request sent and the last answer (CLOCK_MONOTONIC seconds),
    # requests never answered, and the (sent, answered) times of the VALID answers.
    first: float | None
    last: float | None
    unanswered: int
    admitted: tuple[tuple[float, float], ...]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def verifications(self) -> int:
        return sum(self.codes.values())


def executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError(
            "wrk is not installed: install it from the OS packages (Debian and Ubuntu: "
            "apt-get install wrk; macOS: brew install wrk); as root with apt-get, make bench does"
        )
    return found


def version() -> str:
    # `wrk -v` prints its version, then its usage (no URL given) and exits 1.
    probe = subprocess.run(
        [executable(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    match = re.search(r"wrk (\S+)", probe.stdout)
    return match.group(1) if match else "(unknown version)"


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read(output: str) -> Load:
    try:
        data = json.loads(output.strip().splitlines()[-1])
        times = [float(t) for t in data["admitted"]]
        return Load(
            requests=int(data["requests"]),
            seconds=float(data["seconds"]),
            errors=int(data["errors"]),
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            codes={str(code): int(n) for code, n in data["codes"].items()},
            first=data["first"],
            last=data["last"],
            unanswered=int(data["unanswered"]),
            admitted=tuple(zip(times[::2], times[1::2], strict=True)),
        )
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"could not read bench/wrk.lua's report ({exc}):\n{output}") from None


def run(
    urls: Sequence[str],
    bodies: Sequence[str],
    *,
    seconds: float,
    connections: int,
    cpus: frozenset[int] | None,
    threads: int = 1,
    deadline: float | None = None,
) -> tuple[list[Load], float]:
    """Load each of ``urls`` with wrk at once, ``connections`` each, POSTing ``bodies`` in turn
    (none: GET); with ``deadline``, bench/wrk.lua's accuracy mode. What each wrk saw, and the CPU
    seconds they used in all."""
    # A waited-for child's CPU time shows in RUSAGE_CHILDREN; the servers are not waited for yet.
    cpu_before = _children_cpu_seconds()
    with tempfile.NamedTemporaryFile("w", prefix="keyservice-bench-", suffix=".txt") as file:
        file.write("".join(body + "\n" for body in bodies))
        file.flush()
        env = {"BENCH_BODIES": file.name} if bodies else {}
        if deadline is not None:
            env["BENCH_DEADLINE"] = f"{deadline:.6f}"
        command = [executable(), f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s"]
        command += ["--timeout", "5s", "-s", str(SCRIPT)]
        processes = [
            subprocess.Popen(
                [*command, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                preexec_fn=pin_to(cpus),
            )
            for url in urls
        ]
        loads = []
        for process in processes:
            try:
                output, error = process.communicate(timeout=seconds + GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                raise BenchError(f"wrk did not finish in {seconds + GRACE_SECONDS:g} s") from None
            if process.returncode != 0:
                raise BenchError(f"wrk failed ({process.returncode}):\n{error.strip()[-2000:]}")
            loads.append(_read(output))
    return loads, _children_cpu_seconds() - cpu_before

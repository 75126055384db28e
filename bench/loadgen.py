"""A small HTTP/1.1 keep-alive load generator: the fallback of `make bench` where wrk is missing.

It runs as its own process (one core at most: one thread, one event loop), keeps ``--connections``
connections busy with one request in flight each, for ``--duration`` seconds, and prints one JSON
object on stdout::

    {"requests": 51234, "seconds": 10.0, "rps": 5123.4, "p50_ms": 5.9, "p99_ms": 9.1,
     "errors": 0, "non_2xx": 0}

Requests answered after the deadline are not counted, like wrk. Latency runs from writing a
request to reading the end of its response, and the distribution gets wrk 4's correction for
coordinated omission (see ``corrected``), so that p50 and p99 compare with wrk's.

Usage::

    python bench/loadgen.py --port 8000 --path /healthz --connections 32 --duration 10
    python bench/loadgen.py --port 8000 --method POST --path /v1/verify --bodies bodies.txt

``--bodies`` names a file of request bodies, one per line, sent in turn (JSON content type).
Only loopback addresses are accepted as ``--host``: this is a benchmark tool, not a stress tool.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import cast

uvloop: ModuleType | None
try:
    import uvloop  # uvicorn[standard] brings it; plain asyncio is fine, only slower
except ImportError:  # pragma: no cover
    uvloop = None

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
# Past the deadline, requests still in flight get this long to finish before sockets are closed.
GRACE_SECONDS = 5.0


@dataclass
class Stats:
    deadline: float = 0.0
    stopping: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    non_2xx: int = 0


class MalformedResponse(Exception):
    pass


class ResponseReader:
    """Cuts complete HTTP/1.1 responses (status, body) out of a keep-alive byte stream. Only
    Content-Length bodies: the routes measured never answer chunked."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._expected: int | None = None
        self._body_start = 0
        self._status = 0

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        """The response that ``data`` completes, if any (one request is in flight at a time)."""
        self._buffer += data
        if self._expected is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = bytes(self._buffer[: end + 2])
            match = CONTENT_LENGTH.search(head)
            if not head.startswith(b"HTTP/1.1 ") or match is None:
                raise MalformedResponse(head[:80])
            self._status = int(head[9:12])
            self._body_start = end + 4
            self._expected = self._body_start + int(match.group(1))
        if len(self._buffer) < self._expected:
            return None
        body = bytes(self._buffer[self._body_start : self._expected])
        del self._buffer[: self._expected]
        self._expected = None
        return self._status, body


class Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight; a Protocol rather than streams,
    because the generator must stay much cheaper per request than the server it measures."""

    def __init__(self, requests: Iterator[bytes], stats: Stats, closed: asyncio.Future[None]):
        self._requests = requests
        self._stats = stats
        self._closed = closed
        self._transport: asyncio.Transport | None = None
        self._reader = ResponseReader()
        self._sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def start(self) -> None:
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stats.stopping:
            self._stats.errors += 1
        if not self._closed.done():
            self._closed.set_result(None)

    def _send(self) -> None:
        assert self._transport is not None
        if self._stats.stopping:
            self._transport.close()
            return
        self._sent_at = time.perf_counter()
        self._transport.write(next(self._requests))

    def data_received(self, data: bytes) -> None:
        try:
            response = self._reader.feed(data)
        except MalformedResponse:
            self._fail()
            return
        if response is None:
            return
        now = time.perf_counter()
        if now <= self._stats.deadline:
            self._stats.latencies.append(now - self._sent_at)
            if not 200 <= response[0] < 400:
                self._stats.non_2xx += 1
        self._send()

    def _fail(self) -> None:
        self._stats.errors += 1
        assert self._transport is not None
        self._transport.close()


def http_request(method: str, host: str, port: int, path: str, body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: */*"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def corrected(latencies: list[float], *, interval: float) -> list[float]:
    """What wrk 4 does to its latency histogram before reporting it: a request that took ``L``
    kept its connection from sending the ones due every ``interval`` meanwhile, so ``L -
    interval``, ``L - 2 * interval``, ... (while above ``interval``) are counted too. Without it,
    a server that stalls now and then shows a much better p99 than it gives its clients."""
    extra = []
    for latency in latencies:
        if latency >= 2 * interval:
            value = latency - interval
            while value > interval:
                extra.append(value)
                value -= interval
    return latencies + extra


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(
    *, host: str, port: int, requests: list[bytes], connections: int, duration: float
) -> dict[str, float | int]:
    loop = asyncio.get_running_loop()
    stats = Stats(deadline=float("inf"))
    cycle = itertools.cycle(requests)
    closed: list[asyncio.Future[None]] = []
    opened: list[tuple[asyncio.BaseTransport, Connection]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        closed.append(done)
        opened.append(
            await loop.create_connection(partial(Connection, cycle, stats, done), host, port)
        )
    # The clock starts once every connection is open, so that connecting is not measured.
    stats.deadline = time.perf_counter() + duration
    for _, protocol in opened:
        protocol.start()
    await asyncio.sleep(duration)
    stats.stopping = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closed), GRACE_SECONDS)
    for transport, _ in opened:
        transport.close()
    completed = len(stats.latencies)
    # wrk's expected interval between two requests of one connection.
    interval = duration / (completed / connections) if completed >= connections else 0.0
    latencies = sorted(
        corrected(stats.latencies, interval=interval) if interval else stats.latencies
    )
    return {
        "requests": completed,
        "seconds": duration,
        "rps": completed / duration,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": stats.errors,
        "non_2xx": stats.non_2xx,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/")
    parser.add_argument("--bodies", type=Path, help="request bodies, one per line, sent in turn")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address")
    if args.bodies is not None:
        bodies = [line.encode() for line in args.bodies.read_text().splitlines() if line]
        if not bodies:
            parser.error(f"{args.bodies} holds no request body")
        requests = [http_request(args.method, args.host, args.port, args.path, b) for b in bodies]
    else:
        requests = [http_request(args.method, args.host, args.port, args.path, None)]
    result = (uvloop.run if uvloop is not None else asyncio.run)(
        run(
            host=args.host,
            port=args.port,
            requests=requests,
            connections=args.connections,
            duration=args.duration,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

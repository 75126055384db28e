"""The accuracy run's load generator: one rate-limited key, through several instances at once.

It keeps ``--connections`` keep-alive connections to each ``--port`` busy with one
``POST /v1/verify`` in flight each, for ``--duration`` seconds, reads the ``code`` of every answer
and prints one JSON object on stdout::

    {"requests": 41234, "codes": {"VALID": 2049, "RATE_LIMITED": 39185}, "errors": 0,
     "seconds": 10.003, "connections": 32, "admitted": [[0.0, 0.0021], ...]}

Unlike wrk or loadgen.py, it does not abandon the requests in flight at the deadline: it stops
sending and waits for their answers, so that every admission the instances made is counted, and
``seconds`` runs from the first request sent to the last answer received: all the admissions
happened within it. ``admitted`` holds the send and answer times of the admitted (``VALID``)
requests, in seconds from the first send, for the per-interval check.

Usage::

    python -m bench.overload --port 8001 --port 8002 --body-file body.json --duration 10

Only loopback addresses are accepted as ``--host``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

from bench.loadgen import (
    GRACE_SECONDS,
    MalformedResponse,
    ResponseReader,
    http_request,
    uvloop,
)


@dataclass
class Stats:
    deadline: float = float("inf")
    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    first_sent: float = float("inf")
    last_answered: float = float("-inf")
    admitted: list[tuple[float, float]] = field(default_factory=list)


class Connection(asyncio.Protocol):
    """One keep-alive connection with one request in flight, whose answers are read."""

    def __init__(self, request: bytes, stats: Stats, closed: asyncio.Future[None]) -> None:
        self._request = request
        self._stats = stats
        self._closed = closed
        self._transport: asyncio.Transport | None = None
        self._reader = ResponseReader()
        self._sent_at = 0.0
        self._in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._in_flight:
            self._stats.errors += 1  # sent, never answered: its verdict is unknown
        if not self._closed.done():
            self._closed.set_result(None)

    def send(self) -> None:
        assert self._transport is not None
        now = time.perf_counter()
        if now >= self._stats.deadline:
            self._transport.close()
            return
        self._sent_at = now
        self._stats.first_sent = min(self._stats.first_sent, now)
        self._in_flight = True
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        try:
            response = self._reader.feed(data)
        except MalformedResponse:
            self._fail()
            return
        if response is None:
            return
        answered = time.perf_counter()
        status, body = response
        self._in_flight = False
        stats = self._stats
        stats.requests += 1
        stats.last_answered = max(stats.last_answered, answered)
        code = None
        if status == 200:
            with contextlib.suppress(ValueError, AttributeError):
                code = json.loads(body).get("code")
        if not isinstance(code, str):
            stats.errors += 1
        else:
            stats.codes[code] += 1
            if code == "VALID":
                stats.admitted.append((self._sent_at, answered))
        self.send()

    def _fail(self) -> None:
        self._stats.errors += 1
        self._in_flight = False
        assert self._transport is not None
        self._transport.close()


async def run(
    *, host: str, ports: list[int], path: str, body: bytes, connections: int, duration: float
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    stats = Stats()
    closed: list[asyncio.Future[None]] = []
    opened: list[tuple[asyncio.BaseTransport, Connection]] = []
    for port in ports:
        request = http_request("POST", host, port, path, body)
        for _ in range(connections):
            done: asyncio.Future[None] = loop.create_future()
            closed.append(done)
            opened.append(
                await loop.create_connection(partial(Connection, request, stats, done), host, port)
            )
    # Every connection is open before the first request: the instances are loaded together.
    stats.deadline = time.perf_counter() + duration
    for _, protocol in opened:
        protocol.send()
    # Each connection closes itself at its first answer past the deadline.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*closed), duration + GRACE_SECONDS)
    for transport, _ in opened:
        transport.close()
    await asyncio.sleep(0)
    start = stats.first_sent
    return {
        "requests": stats.requests,
        "codes": dict(stats.codes),
        "errors": stats.errors,
        "seconds": max(0.0, stats.last_answered - start),
        "connections": len(opened),
        "admitted": [[sent - start, answered - start] for sent, answered in stats.admitted],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, action="append", required=True, dest="ports")
    parser.add_argument("--path", default="/v1/verify")
    parser.add_argument("--body-file", type=Path, required=True, help="the JSON body to POST")
    parser.add_argument("--connections", type=int, default=16, help="per instance")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address")
    body = args.body_file.read_bytes().strip()
    result = (uvloop.run if uvloop is not None else asyncio.run)(
        run(
            host=args.host,
            ports=args.ports,
            path=args.path,
            body=body,
            connections=args.connections,
            duration=args.duration,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

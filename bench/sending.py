"""What one delivery's HTTP exchange costs in CPU: the delivery worker's sender
(keyservice.webhooks.transport: httpcore's pools over asyncio) beside httpx's client
(``httpx.AsyncClient``, which the worker used before), in turn in one process on uvloop, 8
deliveries at a time to bench/receiver.py on connections kept alive. Each delivery is a signed
request built and checked against the SSRF policy as the worker does
(keyservice.webhooks.sending), then sent by one or the other.

    python -m bench.sending --receiver http://127.0.0.1:9001 --requests 3000

prints ``{"sender": µs, "httpx": µs}``: the process's CPU time per delivery, the median of the
rounds, each way in turn (the ratio is what to read: the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_network

import httpx
import uvloop

from bench import HOST, say
from keyservice.webhooks.sending import EXCERPT_BYTES, Outcome, Request, build_request, send
from keyservice.webhooks.ssrf import Policy
from keyservice.webhooks.transport import CONNECTIONS_PER_ORIGIN, Sender

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo3ODkwMTI="
BODY = b'{"type":"contact.created","timestamp":"2026-01-01T00:00:00Z","data":{"seq":1}}'
ROUNDS = 3
POLICY = Policy(allow_all=False, allowed=(ip_network(f"{HOST}/32"),))

Send = Callable[[Request], Awaitable[Outcome]]


async def _with_httpx(client: httpx.AsyncClient, request: Request) -> Outcome:
    """The worker's attempt as it was with httpx's client: checked, sent, 4 KB read."""
    began = time.monotonic()
    await POLICY.check(request.url)
    response = await client.send(
        client.build_request("POST", request.url, headers=request.headers, content=request.body),
        stream=True,
    )
    try:
        excerpt = bytearray()
        async for chunk in response.aiter_raw():
            excerpt += chunk
            if len(excerpt) >= EXCERPT_BYTES:
                break
    finally:
        await response.aclose()
    latency = round((time.monotonic() - began) * 1000)
    return Outcome(response.status_code, latency, bytes(excerpt).decode(errors="replace"), None)


async def _round(one: Send, receiver: str, requests: int) -> float:
    """CPU seconds per delivery over ``requests`` deliveries, 8 at a time."""
    room = asyncio.Semaphore(CONNECTIONS_PER_ORIGIN)

    async def deliver(n: int) -> None:
        request = build_request(
            f"{receiver}/sending/{n % 10}", [SECRET], message_id=f"msg_{n}", body=BODY
        )
        async with room:
            outcome = await one(request)
        if outcome.status_code != 204:
            raise SystemExit(f"bench sending: the receiver answered {outcome}")

    await asyncio.gather(*(deliver(n) for n in range(100)))  # connections made, code warm
    began = time.process_time()
    await asyncio.gather(*(deliver(n) for n in range(requests)))
    return (time.process_time() - began) / requests


async def measure(receiver: str, requests: int) -> dict[str, float]:
    sender = Sender(timeout=15)
    client = httpx.AsyncClient(
        timeout=15,
        follow_redirects=False,
        limits=httpx.Limits(
            max_connections=CONNECTIONS_PER_ORIGIN,
            max_keepalive_connections=CONNECTIONS_PER_ORIGIN,
        ),
        trust_env=False,
    )
    ways: dict[str, Send] = {
        "sender": lambda request: send(sender, POLICY, request),
        "httpx": lambda request: _with_httpx(client, request),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    try:
        for _ in range(ROUNDS):
            for name, one in ways.items():
                seconds[name].append(await _round(one, receiver, requests))
    finally:
        await sender.aclose()
        await client.aclose()
    return {name: statistics.median(values) * 1e6 for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receiver", required=True, help="bench/receiver.py's base URL")
    parser.add_argument("--requests", type=int, default=3000, help="deliveries per round")
    args = parser.parse_args()
    say(json.dumps(uvloop.run(measure(args.receiver, args.requests))))


if __name__ == "__main__":
    main()

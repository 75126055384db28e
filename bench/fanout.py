"""The webhook fan-out: how many deliveries a second one instance makes, and how long an event
takes to reach its receivers.

One instance started as ``keyservice serve`` starts it (production mode, on PostgreSQL) has
``ENDPOINTS`` webhook endpoints, all subscribed to a product event type and all pointing at
bench/receiver.py, a small HTTP server in a process of its own that answers 204 and records when
each delivery arrived. The product's backend publishes that type with ``POST /v1/events``, so
that each event is delivered ``ENDPOINTS`` times:

- **steady**: ``STEADY_EVENTS_PER_SECOND`` events a second (open loop: each publish leaves at its
  time, whatever the ones before are doing) for the phase's seconds: the latency of a delivery
  under a load the instance can keep up with;
- **burst**: ``BURST_EVENTS`` events published at once, ``PUBLISHERS`` at a time: the most
  deliveries a second it makes, from the first publish sent to the last delivery received.

A delivery's latency runs from its event's time to its arrival at the receiver. The event's time
is the ``timestamp`` of the delivered body (the event's ``created_at``, taken in the publish's
transaction, before it commits); the time from the publish's answer to the arrival is reported
beside it. One clock serves both: everything runs on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from bench import HOST, BenchError, pin_to, say
from bench.database import fetch
from bench.instance import ROOT, Server, serve

ENDPOINTS = 10
EVENT_TYPE = "contact.created"
# 50 events a second to 10 endpoints: the 500 deliveries a second of the goal, offered steadily.
STEADY_EVENTS_PER_SECOND = 50
BURST_EVENTS = 1000
PUBLISHERS = 8
WARMUP_EVENTS = 20
# How long the deliveries may take to arrive once the last event is published.
DRAIN_SECONDS = 60.0
DELIVERIES_GOAL = 500.0
P50_GOAL_MS = 250.0
STEADY = "steady"
BURST = "burst"


@dataclass(frozen=True)
class Published:
    seq: int
    sent: float
    answered: float


@dataclass
class Phase:
    """One phase's events and what the receiver saw of them."""

    name: str
    events: int
    endpoints: int
    published: dict[int, Published] = field(default_factory=dict)
    # (arrival, endpoint path, webhook-id, seq, event timestamp)
    arrivals: list[tuple[float, str, str, int, float]] = field(default_factory=list)
    server_cpu_seconds: float = 0.0
    # The machine's load average (1 minute) when the phase began: others' work shows in it.
    load_average: float = 0.0
    # The messages as the database has them afterwards: by status, and their attempts.
    statuses: dict[str, int] = field(default_factory=dict)
    attempts: int = 0

    @property
    def expected(self) -> int:
        return self.events * self.endpoints

    @property
    def deliveries(self) -> int:
        return len({(path, seq) for _, path, _, seq, _ in self.arrivals})

    @property
    def duplicates(self) -> int:
        return len(self.arrivals) - self.deliveries

    @property
    def first_sent(self) -> float:
        return min(p.sent for p in self.published.values())

    @property
    def last_sent(self) -> float:
        return max(p.sent for p in self.published.values())

    @property
    def elapsed(self) -> float:
        """From the first publish sent to the last delivery received."""
        return max(a[0] for a in self.arrivals) - self.first_sent

    @property
    def publish_seconds(self) -> float:
        return self.last_sent - self.first_sent

    @property
    def rate(self) -> float:
        return self.deliveries / self.elapsed

    def publish_ms(self) -> list[float]:
        return sorted((p.answered - p.sent) * 1000 for p in self.published.values())

    def latencies_ms(self, since_answer: bool = False) -> list[float]:
        if since_answer:
            return sorted(
                (at - self.published[seq].answered) * 1000 for at, _, _, seq, _ in self.arrivals
            )
        return sorted((at - stamp) * 1000 for at, _, _, _, stamp in self.arrivals)


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted ``values``."""
    return values[max(0, math.ceil(share * len(values)) - 1)]


@dataclass(frozen=True)
class Result:
    phases: dict[str, Phase]
    endpoints: int
    steady_rate: int
    publishers: int
    problems: list[str]
    # One delivery's HTTP exchange in µs of CPU: the worker's sender, and httpx's client.
    sending: dict[str, float]

    @property
    def steady(self) -> Phase:
        return self.phases[STEADY]

    @property
    def burst(self) -> Phase:
        return self.phases[BURST]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def receiver(cpus: frozenset[int] | None) -> Iterator[str]:
    """bench/receiver.py on a free port until the block ends: its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.receiver", "--port", str(port)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        preexec_fn=pin_to(cpus),
    )
    base_url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{base_url}/records", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise BenchError("the webhook receiver did not start") from None
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _post(server: Server, key: str, path: str, body: Mapping[str, object]) -> dict[str, object]:
    response = server.client.post(path, headers={"Authorization": f"Bearer {key}"}, json=body)
    if response.status_code != 201:
        raise BenchError(f"POST {path} failed: {response.status_code} {response.text[:500]}")
    created: dict[str, object] = response.json()
    return created


def setup(server: Server, owner_key: str, receiver_url: str, endpoints: int) -> str:
    """The endpoints, and a key of the product's backend that publishes events: its secret."""
    for number in range(endpoints):
        _post(
            server,
            owner_key,
            "/v1/webhooks/endpoints",
            {
                "url": f"{receiver_url}/endpoint/{number}",
                "description": f"Bench receiver {number}",
                "event_types": [EVENT_TYPE],
            },
        )
    permissions = ["keyservice:events:publish"]
    body = {"name": "Backend", "developer_email": "bench@example.com", "permissions": permissions}
    application = _post(server, owner_key, "/v1/applications", body)["id"]
    key = _post(
        server,
        owner_key,
        f"/v1/applications/{application}/keys",
        {"name": "Backend events", "scopes": permissions},
    )["key"]
    assert isinstance(key, str)
    return key


async def _publish(
    client: httpx.AsyncClient, seq: int, phase: Phase, run: str, failures: list[str]
) -> None:
    body = {"type": EVENT_TYPE, "data": {"run": run, "seq": seq}}
    sent = time.time()
    try:
        response = await client.post("/v1/events", json=body)
    except httpx.HTTPError as exc:
        failures.append(f"{type(exc).__name__}")
        return
    answered = time.time()
    if response.status_code != 201:
        failures.append(f"{response.status_code} {response.text[:200]}")
        return
    phase.published[seq] = Published(seq, sent, answered)


async def publish(
    base_url: str,
    key: str,
    phase: Phase,
    *,
    per_second: float | None,
    concurrency: int = PUBLISHERS,
) -> list[str]:
    """Publish the phase's events: at ``per_second`` (open loop), or as fast as ``concurrency``
    publishers go. The failures."""
    failures: list[str] = []
    limits = httpx.Limits(max_connections=concurrency * 4)
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        limits=limits,
        trust_env=False,
    ) as client:
        if per_second is not None:
            started = time.monotonic()
            tasks = []
            for seq in range(phase.events):
                delay = started + seq / per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(
                    asyncio.create_task(_publish(client, seq, phase, phase.name, failures))
                )
            await asyncio.gather(*tasks)
        else:
            queue = iter(range(phase.events))

            async def publisher() -> None:
                for seq in queue:
                    await _publish(client, seq, phase, phase.name, failures)

            await asyncio.gather(*(publisher() for _ in range(concurrency)))
    return failures


def collect(receiver_url: str, phase: Phase) -> None:
    """Take what the receiver recorded until every delivery of the phase arrived, or until
    DRAIN_SECONDS passed."""
    deadline = time.monotonic() + DRAIN_SECONDS
    expected = len(phase.published) * phase.endpoints
    seen: set[tuple[str, int]] = set()
    with httpx.Client(base_url=receiver_url, timeout=30, trust_env=False) as client:
        while True:
            for at, path, webhook_id, raw in client.get("/records").json():
                body = json.loads(raw)
                if body["data"].get("run") != phase.name:
                    continue  # a late delivery of an earlier phase
                stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
                seq = int(body["data"]["seq"])
                phase.arrivals.append((at, path, webhook_id, seq, stamp.timestamp()))
                seen.add((path, seq))
            if len(seen) >= expected or time.monotonic() > deadline:
                return
            time.sleep(0.2)


def database_counts(url: str) -> tuple[dict[str, int], int]:
    """Every message's status, and their attempts, as the database has them."""
    row = fetch(
        url,
        "SELECT count(*) FILTER (WHERE status = 'delivered'), "
        "count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'failed'), "
        "coalesce(sum(attempts), 0) FROM webhook_messages",
    )
    delivered, pending, failed, attempts = (int(v) for v in row)
    return {"delivered": delivered, "pending": pending, "failed": failed}, attempts


def run_phase(
    server: Server,
    url: str,
    receiver_url: str,
    key: str,
    phase: Phase,
    per_second: float | None,
) -> list[str]:
    what = f"{per_second:g} events/s" if per_second else f"at once, {PUBLISHERS} publishers"
    say(
        f"bench: fan-out: {phase.name}: {phase.events:,} events to {phase.endpoints} endpoints "
        f"({what})"
    )
    before_statuses, before_attempts = database_counts(url)
    phase.load_average = os.getloadavg()[0]
    cpu = server.cpu_seconds()
    failures = asyncio.run(publish(server.base_url, key, phase, per_second=per_second))
    collect(receiver_url, phase)
    server.settle()
    phase.server_cpu_seconds = server.cpu_seconds() - cpu
    statuses, attempts = database_counts(url)
    phase.statuses = {k: v - before_statuses.get(k, 0) for k, v in statuses.items()}
    phase.attempts = attempts - before_attempts
    problems = [f"fan-out {phase.name}: publish failed: {f}" for f in failures[:5]]
    if len(failures) > 5:
        problems.append(f"fan-out {phase.name}: {len(failures) - 5} more publishes failed")
    missing = len(phase.published) * phase.endpoints - phase.deliveries
    if missing:
        problems.append(
            f"fan-out {phase.name}: {missing:,} deliveries did not arrive within "
            f"{DRAIN_SECONDS:.0f} s of the last publish"
        )
    return problems


def measure(
    admin_url: str,
    url: str,
    owner_key: str,
    seconds: int,
    cpus: tuple[frozenset[int] | None, frozenset[int] | None],
) -> Result:
    """Both phases on one instance of the database at ``url`` (migrated, with an owner)."""
    server_cpus, receiver_cpus = cpus
    settings = {"KEYSERVICE_WEBHOOK_ALLOWED_NETWORKS": f"{HOST}/32"}
    with receiver(receiver_cpus) as receiver_url:
        with serve(url, cpus=server_cpus, as_shipped=True, settings=settings) as server:
            say(
                f"bench: fan-out: keyservice serve on {server.base_url}, receiver on {receiver_url}"
            )
            key = setup(server, owner_key, receiver_url, ENDPOINTS)
            warmup = Phase("warm-up", WARMUP_EVENTS, ENDPOINTS)
            problems = run_phase(server, url, receiver_url, key, warmup, STEADY_EVENTS_PER_SECOND)
            phases = {
                STEADY: Phase(STEADY, STEADY_EVENTS_PER_SECOND * seconds, ENDPOINTS),
                BURST: Phase(BURST, BURST_EVENTS, ENDPOINTS),
            }
            problems += run_phase(
                server, url, receiver_url, key, phases[STEADY], STEADY_EVENTS_PER_SECOND
            )
            problems += run_phase(server, url, receiver_url, key, phases[BURST], None)
        sending = measure_sending(receiver_url, server_cpus)
    for phase in phases.values():
        if phase.attempts != phase.statuses.get("delivered", 0) or phase.statuses.get("failed"):
            problems.append(
                f"fan-out {phase.name}: {phase.attempts:,} attempts for "
                f"{phase.statuses.get('delivered', 0):,} delivered messages, "
                f"{phase.statuses.get('failed', 0):,} failed (expected one attempt each)"
            )
    return Result(phases, ENDPOINTS, STEADY_EVENTS_PER_SECOND, PUBLISHERS, problems, sending)


def measure_sending(receiver_url: str, cpus: frozenset[int] | None) -> dict[str, float]:
    """bench/sending.py on the server's CPUs: one delivery's HTTP exchange, in µs of CPU, with
    the worker's sender and with httpx's client."""
    say("bench: fan-out: one delivery's HTTP exchange, the worker's sender and httpx's client")
    done = subprocess.run(
        [sys.executable, "-m", "bench.sending", "--receiver", receiver_url],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=pin_to(cpus),
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"bench/sending.py failed: {done.stderr.strip()[-2000:]}")
    cost: dict[str, float] = json.loads(done.stdout)
    return cost


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def rows(result: Result) -> list[str]:
    header = [
        "phase",
        "events",
        "deliveries",
        "published in",
        "last delivery after",
        "deliveries/s",
        "p50",
        "p99",
        "p50 from answer",
        "p99 from answer",
        "server CPU",
        "publish p50",
        "publish p99",
        "repeats",
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join(["---:"] * (len(header) - 1)) + " |",
    ]
    for phase in result.phases.values():
        event = phase.latencies_ms()
        answer = phase.latencies_ms(since_answer=True)
        cells = [
            phase.name,
            f"{len(phase.published):,}",
            f"{phase.deliveries:,}",
            f"{phase.publish_seconds:.2f} s",
            f"{phase.elapsed:.2f} s",
            f"{phase.rate:,.0f}",
            _ms(percentile(event, 0.5)),
            _ms(percentile(event, 0.99)),
            _ms(percentile(answer, 0.5)),
            _ms(percentile(answer, 0.99)),
            f"{phase.server_cpu_seconds / phase.elapsed:.0%}",
            _ms(percentile(phase.publish_ms(), 0.5)),
            _ms(percentile(phase.publish_ms(), 0.99)),
            str(phase.duplicates),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def goals(result: Result) -> list[tuple[str, bool]]:
    """Each goal's line and whether it is met."""
    burst_rate = result.burst.rate
    steady_p50 = percentile(result.steady.latencies_ms(), 0.5)
    return [
        (
            f"deliveries/s, one instance (burst): {burst_rate:,.0f} (goal: at least "
            f"{DELIVERIES_GOAL:,.0f}; {'met' if burst_rate >= DELIVERIES_GOAL else 'NOT met'})",
            burst_rate >= DELIVERIES_GOAL,
        ),
        (
            f"event-to-receipt p50 at {result.steady_rate * result.endpoints:,} deliveries/s "
            f"(steady): {_ms(steady_p50)} (goal: under {P50_GOAL_MS:.0f} ms; "
            f"{'met' if steady_p50 < P50_GOAL_MS else 'NOT met'})",
            steady_p50 < P50_GOAL_MS,
        ),
    ]


SECTION = "## Webhook fan-out"


def section(result: Result, *, command: str, date: str, machine: dict[str, str]) -> str:
    """docs/performance.md's fan-out section."""
    steady, burst = result.steady, result.burst
    statuses = ", ".join(
        f"{name} {sum(p.statuses.get(name, 0) for p in result.phases.values()):,}"
        for name in ("delivered", "pending", "failed")
    )
    lines = [
        SECTION,
        "",
        "How fast one instance delivers the product's events to webhook endpoints; what the",
        "fan-out does and why: bench/fanout.py and [bench/README.md](../bench/README.md).",
        "",
        f"- Command: `{command}`",
        f"- Date: {date}",
        f"- Machine: {machine['machine']}",
        f"- Software: {machine['software']}",
        "- Instance: one, started as `keyservice serve` starts it (production mode, a JSON line "
        "per request, metrics on), with `KEYSERVICE_WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32` so "
        "that it may deliver to a local receiver, and the default delivery settings (up to "
        "200 deliveries under way, `KEYSERVICE_WEBHOOK_MAX_IN_FLIGHT`, claimed 50 at a time, "
        "`KEYSERVICE_WEBHOOK_BATCH_SIZE`); pinned like the server above, PostgreSQL not",
        f"- Endpoints: {result.endpoints}, each subscribed to `{EVENT_TYPE}` and pointing at "
        "bench/receiver.py (an HTTP/1.1 server on asyncio and uvloop, in a process of its own "
        "pinned like the load generator), which answers 204 at once and records when each "
        "delivery arrived",
        f'- Events: `POST /v1/events` with `{{"type": "{EVENT_TYPE}", "data": '
        '{"run": …, "seq": …}}` by an application key holding `keyservice:events:publish`; '
        f"each is delivered {result.endpoints} times. Steady: {result.steady_rate} events/s "
        f"({result.steady_rate * result.endpoints:,} deliveries/s offered), each publish sent at "
        f"its time whatever the others do; burst: {len(burst.published):,} events published "
        f"at once by {result.publishers} publishers; {WARMUP_EVENTS} events of warm-up first",
        "- Latency: from the event's time, the `timestamp` of the delivered body (the event's "
        "`created_at`, taken in the publish's transaction before it commits), to the delivery's "
        'arrival at the receiver; "from answer": from the publish\'s answer (201) instead. '
        "Deliveries/s: deliveries over the time from the first publish sent to the last "
        "delivery received. Server CPU: the instance's CPU time over that time (100% is one "
        "core); PostgreSQL's is not in it",
        "",
        *rows(result),
        "",
        *(f"- {line}" for line, _ in goals(result)),
        f"- Goals {'met' if all(met for _, met in goals(result)) else 'not met'}.",
        f"- Messages in the database afterwards: {statuses}; attempts: "
        f"{sum(p.attempts for p in result.phases.values()):,} (one per message: no retries). "
        "Repeats: deliveries that arrived more than once (at least once allows them).",
        f"- Noise: the machine has {os.cpu_count()} CPUs, shared by the instance, PostgreSQL, "
        "the receiver and the publishers, and by whatever else runs on it (load average when "
        "the phases began: "
        + ", ".join(f"{p.name} {p.load_average:.1f}" for p in result.phases.values())
        + "); the figures move by tens of percent between runs, so the goals are read with a "
        f"margin. The steady phase's {steady.deliveries:,} deliveries took "
        f"{steady.elapsed:.1f} s for {steady.publish_seconds:.1f} s of publishing.",
        f"- One delivery's HTTP exchange alone (bench/sending.py, after the phases, on the "
        f"server's CPU, 8 at a time to the same receiver): {result.sending['sender']:.0f} µs of "
        f"CPU with the worker's sender (httpcore's pools over asyncio), "
        f"{result.sending['httpx']:.0f} µs with httpx's client (`httpx.AsyncClient`, which the "
        f"worker used before): {result.sending['httpx'] / result.sending['sender']:.2f} times "
        "as much.",
        *(f"- Problem: {problem}" for problem in result.problems),
    ]
    return "\n".join(lines) + "\n"


def replace_section(document: str, new: str) -> str:
    """``document`` with its fan-out section (to the next ``## `` heading or the end) replaced
    by ``new``, or ``new`` added at its end."""
    start = document.find(SECTION + "\n")
    if start < 0:
        return document.rstrip("\n") + "\n\n" + new
    end = document.find("\n## ", start + len(SECTION))
    rest = document[end + 1 :] if end >= 0 else ""
    return document[:start] + new + ("\n" + rest if rest else "")


def existing_section(path: Path) -> str | None:
    """The fan-out section of the document at ``path``, if it has one."""
    if not path.exists():
        return None
    document = path.read_text()
    start = document.find(SECTION + "\n")
    if start < 0:
        return None
    end = document.find("\n## ", start + len(SECTION))
    return document[start : end + 1 if end >= 0 else None]


def summary(result: Result) -> str:
    return "\n".join([SECTION, "", *rows(result), "", *(f"- {line}" for line, _ in goals(result))])

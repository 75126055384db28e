"""How a delivery reaches its receiver: over https to the address the SSRF guard checked, under
the endpoint's own host name (Host, SNI, the certificate's name), with the deployment's own
certificate authority when it names one; connections kept alive and at most a few per origin;
an attempt bounded as a whole by the timeout; and every way a receiver can fail said in the
attempt (a timeout, a TLS refusal, a connection closed without an answer)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from certificates import Certificates, make_certificates
from conftest import Clock, make_delivery
from factories import create_application, create_tenant
from keyservice.config import Settings
from keyservice.models import WebhookAttempt, WebhookMessage
from keyservice.webhooks.delivery import Delivery
from keyservice.webhooks.sending import EXCERPT_BYTES, Outcome, build_request, send
from keyservice.webhooks.ssrf import Policy
from keyservice.webhooks.transport import CONNECTIONS_PER_ORIGIN, Sender
from receivers import Receiver, endpoint_for

HOST = "hooks.partner.test"
SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo3ODkwMTI="
NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


async def _resolves_to_loopback(host: str, port: int) -> Sequence[str]:
    assert host == HOST
    return ["127.0.0.1"]


# Production's policy, with loopback allowed and the partner's name resolving to it.
POLICY = Policy(
    allow_all=False, allowed=(ip_network("127.0.0.1/32"),), resolver=_resolves_to_loopback
)


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path, host=HOST)


@pytest.fixture
async def tls_receiver(certificates: Certificates) -> AsyncIterator[Receiver]:
    async with Receiver(tls=certificates) as started:
        yield started


def _production_delivery(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    *,
    ca_file: Path | None,
) -> Delivery:
    production = settings.model_copy(
        update={
            "mode": "production",
            "webhook_allowed_networks": ("127.0.0.1/32",),
            "webhook_ca_file": ca_file,
        }
    )
    return make_delivery(
        sessionmaker,
        production,
        clock,
        policy=Policy.of(production, resolver=_resolves_to_loopback),
    )


async def _attempt_of(session: AsyncSession, endpoint_id: str) -> WebhookAttempt:
    [attempt] = (
        await session.scalars(
            select(WebhookAttempt)
            .join(WebhookMessage, WebhookMessage.id == WebhookAttempt.message_id)
            .where(WebhookMessage.endpoint_id == uuid.UUID(endpoint_id))
        )
    ).all()
    return attempt


async def test_an_https_receiver_is_reached_at_the_checked_address_under_its_own_name(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    certificates: Certificates,
    tls_receiver: Receiver,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, tls_receiver)
    worker = _production_delivery(sessionmaker, settings, clock, ca_file=certificates.ca_file)
    try:
        await create_application(client, tenant)
        assert await worker.run_once() == 1
    finally:
        await worker.stop()
    # The certificate is for the partner's name only: the handshake checked that name, although
    # the connection went to the address the guard resolved it to.
    [received] = tls_receiver.verified()
    assert received.headers["host"] == f"{HOST}:{tls_receiver.port}"
    assert received.payload["type"] == "application.created"
    attempt = await _attempt_of(session, created["id"])
    assert (attempt.status_code, attempt.error, attempt.success) == (200, None, True)


async def test_a_receiver_whose_certificate_is_not_trusted_is_a_tls_failure(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Clock,
    tls_receiver: Receiver,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, tls_receiver)
    worker = _production_delivery(sessionmaker, settings, clock, ca_file=None)
    try:
        await create_application(client, tenant)
        assert await worker.run_once() == 1
    finally:
        await worker.stop()
    assert tls_receiver.received == []
    attempt = await _attempt_of(session, created["id"])
    assert (attempt.status_code, attempt.error, attempt.success) == (None, "tls", False)


def test_a_ca_file_that_is_not_one_is_refused_at_startup(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match="not a readable PEM file"):
        Settings(_env_file=None, webhook_ca_file=not_pem)
    with pytest.raises(ValueError, match="not a readable PEM file"):
        Settings(_env_file=None, webhook_ca_file=tmp_path / "missing.pem")


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawReceiver:
    """A receiver that behaves as the test says, byte by byte; it counts its connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{HOST}:{port}/hooks"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        self.requests += 1
        return body

    async def __aenter__(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def _deliver(sender: Sender, url: str, message: int = 0) -> Outcome:
    request = build_request(url, [SECRET], message_id=f"msg_{message}", body=b'{"type":"t"}')
    return await send(sender, POLICY, request)


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    sending = Sender(timeout=0.5)
    yield sending
    await sending.aclose()


async def test_connections_are_kept_alive_and_at_most_a_few_per_receiver(
    sender: Sender,
) -> None:
    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await receiver.read_request(reader)
            writer.write(NO_CONTENT)
            await writer.drain()

    async with RawReceiver(answers) as receiver:
        for message in range(10):
            assert (await _deliver(sender, receiver.url, message)).status_code == 204
        assert receiver.connections == 1
        outcomes = await asyncio.gather(*(_deliver(sender, receiver.url, n) for n in range(40)))
        assert {outcome.status_code for outcome in outcomes} == {204}
        assert receiver.connections <= CONNECTIONS_PER_ORIGIN
        assert receiver.requests == 50


async def test_a_connection_the_receiver_closed_while_idle_is_not_reused(sender: Sender) -> None:
    closed = asyncio.Event()

    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await receiver.read_request(reader)
        writer.write(NO_CONTENT)  # keep-alive, as far as the answer says
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    async with RawReceiver(answers_once) as receiver:
        for message in range(3):
            closed.clear()
            assert (await _deliver(sender, receiver.url, message)).status_code == 204
            await asyncio.wait_for(closed.wait(), 5)
            await asyncio.sleep(0.05)  # the close reaches our side (a bound, not a measurement)
        assert receiver.connections == 3


async def test_a_receiver_that_never_answers_is_a_timeout(sender: Sender) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await receiver.read_request(reader)
        await reader.read()  # until the sender gives up

    async with RawReceiver(silent) as receiver:
        outcome = await _deliver(sender, receiver.url)
    assert (outcome.status_code, outcome.error) == (None, "timeout")
    assert outcome.latency_ms < 5000


async def test_the_timeout_bounds_the_whole_attempt_not_each_read(sender: Sender) -> None:
    # Each byte comes well within the timeout; the answer as a whole would take minutes.
    async def drips(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await receiver.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        while True:
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with RawReceiver(drips) as receiver:
        outcome = await _deliver(sender, receiver.url)
    assert (outcome.status_code, outcome.error) == (None, "timeout")


async def test_a_receiver_that_hangs_up_without_answering_says_so(sender: Sender) -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await receiver.read_request(reader)

    async with RawReceiver(hangs_up) as receiver:
        outcome = await _deliver(sender, receiver.url)
    assert (outcome.status_code, outcome.error) == (None, "network")


async def test_a_long_answer_is_cut_to_its_first_4_kb_and_the_next_delivery_works(
    sender: Sender,
) -> None:
    body = b"x" * 1_000_000

    async def long_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await receiver.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    async with RawReceiver(long_answer) as receiver:
        first = await _deliver(sender, receiver.url, 1)
        second = await _deliver(sender, receiver.url, 2)
    assert (first.status_code, len(first.excerpt)) == (200, EXCERPT_BYTES)
    assert (second.status_code, second.excerpt) == (200, first.excerpt)


async def test_a_receiver_is_reached_again_after_its_attempts_timed_out(sender: Sender) -> None:
    # More timeouts than the origin has connections: none of them is left taken in the pool.
    silent = True

    async def answers_when_told(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await receiver.read_request(reader)
            if silent:
                await reader.read()
                return
            writer.write(NO_CONTENT)
            await writer.drain()

    async with RawReceiver(answers_when_told) as receiver:
        timed_out = await asyncio.gather(
            *(_deliver(sender, receiver.url, n) for n in range(2 * CONNECTIONS_PER_ORIGIN))
        )
        assert {outcome.error for outcome in timed_out} == {"timeout"}
        silent = False
        outcomes = await asyncio.gather(*(_deliver(sender, receiver.url, n) for n in range(8)))
    assert {outcome.status_code for outcome in outcomes} == {204}

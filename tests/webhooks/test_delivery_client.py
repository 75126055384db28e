"""The delivery worker's HTTP/1.1 client, against real servers on loopback sockets: connections
kept alive and reused, replaced when the other end closed them, not reused after an answer cut
short; chunked answers; a timeout for the whole exchange; TLS verified for the endpoint's host
name while the connection goes to the checked address."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyservice.webhooks.http1 import Answer, Destination, Pool
from keyservice.webhooks.sending import Request, deliver
from keyservice.webhooks.ssrf import Policy

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
LOOPBACK = Policy(allow_all=False, allowed=(ipaddress.ip_network("127.0.0.1/32"),))


class Server:
    """Reads each request (head and content-length body) and answers ``answer(number)``;
    counts connections. ``close_after`` closes each connection after its first answer."""

    def __init__(
        self,
        answer: Callable[[int], bytes | None] = lambda _: OK,
        *,
        close_after: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer
        self.close_after = close_after
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answer(len(self.requests))
                if answer is None:
                    await asyncio.sleep(3600)  # never answers
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()


def _destination(server: Server, *, scheme: str = "http", host: str = "127.0.0.1") -> Destination:
    return Destination(scheme=scheme, address="127.0.0.1", port=server.port, host=host)


async def _post(pool: Pool, destination: Destination, *, timeout: float = 5.0) -> Answer:
    return await pool.post(
        destination,
        target="/hooks?x=1",
        headers={"host": f"{destination.host}:{destination.port}"},
        body=b'{"type":"deal.won"}',
        excerpt=4096,
        timeout=timeout,
    )


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    created = Pool()
    yield created
    await created.aclose()


async def test_a_connection_is_kept_alive_and_reused(pool: Pool) -> None:
    async with Server() as server:
        for _ in range(3):
            answer = await _post(pool, _destination(server))
            assert answer.status_code == 200
            assert answer.excerpt == b"ok"
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /hooks?x=1 HTTP/1.1\r\n")
    assert b"content-length: 19\r\n" in server.requests[0]
    assert server.requests[0].endswith(b'{"type":"deal.won"}')


async def test_a_connection_the_receiver_closed_is_replaced_without_a_failure(
    pool: Pool,
) -> None:
    async with Server(close_after=True) as server:
        for _ in range(3):
            answer = await _post(pool, _destination(server))
            assert answer.status_code == 200
    assert server.connections == 3


async def test_a_long_answer_is_cut_and_its_connection_closed(pool: Pool) -> None:
    long = b"HTTP/1.1 500 Oops\r\ncontent-length: 10000\r\n\r\n" + b"x" * 10_000
    async with Server(lambda n: long if n == 1 else OK) as server:
        first = await _post(pool, _destination(server))
        second = await _post(pool, _destination(server))
    assert (first.status_code, len(first.excerpt)) == (500, 4096)
    assert second.excerpt == b"ok"
    assert server.connections == 2


async def test_a_chunked_answer_is_read_and_its_headers_kept(pool: Pool) -> None:
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\nretry-after: 7\r\n\r\n"
        b"5\r\nslow \r\n4\r\ndown\r\n0\r\n\r\n"
    )
    async with Server(lambda _: chunked) as server:
        answer = await _post(pool, _destination(server))
        again = await _post(pool, _destination(server))
    assert (answer.status_code, answer.excerpt) == (429, b"slow down")
    assert answer.headers["retry-after"] == "7"
    assert again.status_code == 429
    assert server.connections == 1


async def test_a_receiver_that_does_not_answer_times_out(pool: Pool) -> None:
    async with Server(lambda _: None) as server:
        url = f"http://127.0.0.1:{server.port}/hooks"
        outcome = await deliver(
            pool, LOOPBACK, Request(url=url, headers={}, body=b"{}"), timeout=0.3
        )
    assert (outcome.status_code, outcome.error, outcome.success) == (None, "timeout", False)
    assert 250 <= outcome.latency_ms < 3000


async def test_nothing_listening_is_refused(pool: Pool) -> None:
    async with Server() as server:
        port = server.port
    outcome = await deliver(
        pool, LOOPBACK, Request(url=f"http://127.0.0.1:{port}/", headers={}, body=b"{}"), timeout=5
    )
    assert (outcome.status_code, outcome.error) == (None, "refused")


def _certificate(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``host``: the server's context, and a client's that
    trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


async def test_tls_is_verified_for_the_endpoints_host_name(tmp_path: Path) -> None:
    server_tls, client_tls = _certificate(tmp_path, "hooks.partner.example")
    trusting = Pool(tls=client_tls)
    try:
        async with Server(tls=server_tls) as server:
            # Connected to the checked address, verified for the URL's host name.
            answer = await _post(
                trusting, _destination(server, scheme="https", host="hooks.partner.example")
            )
            assert answer.status_code == 200
            with pytest.raises(ssl.SSLCertVerificationError):
                await _post(trusting, _destination(server, scheme="https", host="other.example"))
            # The worker's own pool trusts certifi's authorities only: a self-signed
            # certificate is a TLS failure.
            untrusting = Pool()
            url = f"https://127.0.0.1:{server.port}/hooks"
            outcome = await deliver(
                untrusting, LOOPBACK, Request(url=url, headers={}, body=b"{}"), timeout=5
            )
            await untrusting.aclose()
    finally:
        await trusting.aclose()
    assert (outcome.status_code, outcome.error) == (None, "tls")

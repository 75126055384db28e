"""How deliveries reach their receivers: httpcore, the HTTP engine httpx is built on, with a
connection pool per destination origin over asyncio's own streams.

httpx's client, its request and response models and anyio's stream wrappers cost more than the
HTTP they carry: through them one delivery's exchange took about 870 us of CPU, through
httpcore's pool on asyncio about 410 us (bench/sending.py measures both in every
``make bench``; docs/performance.md has the figures). So deliveries use httpcore
directly: HTTP/1.1 (h11), keep-alive, pooling and TLS are its own, exactly as under httpx; what
is ours is the thin network backend below, which hands httpcore an asyncio transport instead of
an anyio stream, and TLS through ``loop.start_tls`` with httpx's default certificate checks.

Each origin (scheme, host and port of the endpoint's URL) has a pool of its own, of at most
``CONNECTIONS_PER_ORIGIN`` connections, and deliveries beyond them wait outside it: a slow
receiver holds up its own deliveries and nobody else's, and httpcore's pool, which looks at each
of its connections for every request, stays small. A connection is made to the address the SSRF
guard checked (``Target.address``), the name kept for ``Host`` and for TLS (SNI and the
certificate's name), so that a name that resolves elsewhere since gains nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx

from keyservice.webhooks.ssrf import Target

CONNECTIONS_PER_ORIGIN = 8
# Origins whose pools are kept; the least recently used beyond are closed.
MAX_ORIGINS = 256
# An idle connection is closed after this long (httpx's default).
KEEPALIVE_SECONDS = 5.0
# What is read ahead of httpcore before the receiver is asked to wait (flow control).
READ_AHEAD_BYTES = 256 * 1024

# Whatever httpcore raises when a request gets no answer (its exceptions share no base class).
ERRORS: tuple[type[Exception], ...] = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    # A pool closed under a request: an origin evicted beyond MAX_ORIGINS, or the worker stopping.
    httpcore.ConnectionNotAvailable,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    headers: dict[str, str]
    excerpt: bytes


class _Protocol(asyncio.Protocol):
    """Gathers what the receiver sends until httpcore reads it; says when writing must wait."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.readable: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_AHEAD_BYTES and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake_reader()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None:
            if not self.writable.done():
                self.writable.set_result(None)
            self.writable = None

    def _wake_reader(self) -> None:
        if self.readable is not None and not self.readable.done():
            self.readable.set_result(None)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.closed:
            protocol.readable = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await protocol.readable
            except TimeoutError as exc:
                raise httpcore.ReadTimeout("no answer in time") from exc
            finally:
                protocol.readable = None
        if protocol.buffer:
            data = bytes(protocol.buffer[:max_bytes])
            del protocol.buffer[:max_bytes]
            if protocol.reading_paused and len(protocol.buffer) <= READ_AHEAD_BYTES // 2:
                protocol.reading_paused = False
                self._transport.resume_reading()
            return data
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._protocol.closed or self._transport.is_closing():
            raise httpcore.WriteError("the connection was closed")
        self._transport.write(buffer)
        writable = self._protocol.writable
        if writable is not None:
            try:
                async with asyncio.timeout(timeout):
                    await writable
            except TimeoutError as exc:
                raise httpcore.WriteTimeout("the receiver does not read") from exc

    async def aclose(self) -> None:
        # At once, as httpcore expects: close() would wait for a receiver that stops reading
        # (or 30 s for its TLS close_notify), a socket left open meanwhile.
        self._transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore.ConnectTimeout("the TLS handshake took too long") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # pragma: no cover - closed during the handshake
            raise httpcore.ConnectError("the connection was closed during the TLS handshake")
        self._protocol.transport = transport  # flow control now pauses the TLS transport
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # httpcore asks this of an idle connection: anything to read, or the end, means
            # the receiver closed it.
            return bool(self._protocol.buffer) or self._protocol.closed
        names = {
            "ssl_object": "ssl_object",
            "client_addr": "sockname",
            "server_addr": "peername",
            "socket": "socket",
        }
        return self._transport.get_extra_info(names[info]) if info in names else None


class _Backend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol,
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("no connection in time") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _Stream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - webhooks go to URLs
        raise httpcore.UnsupportedProtocol("webhooks are sent over TCP")

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - no retries in httpcore
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class _Destination:
    origin: str
    scheme: bytes
    port: int | None
    target: bytes
    host_header: bytes


@functools.lru_cache(maxsize=4096)
def _destination(url: str) -> _Destination:
    parsed = httpx.URL(url)
    return _Destination(
        origin=f"{parsed.scheme}://{parsed.netloc.decode()}",
        scheme=parsed.raw_scheme,
        port=parsed.port,
        target=parsed.raw_path,
        host_header=parsed.netloc,
    )


def ssl_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """httpx's default checks (its certificate authorities, TLS 1.2 or newer, the name
    checked), and the deployment's own authority if it names one."""
    context = httpx.create_ssl_context(trust_env=False)
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class Sender:
    """Sends requests to webhook receivers, a pool of connections per origin."""

    def __init__(
        self,
        *,
        timeout: float,
        connections_per_origin: int = CONNECTIONS_PER_ORIGIN,
        ca_file: Path | None = None,
    ) -> None:
        self.timeout = timeout
        self.connections_per_origin = connections_per_origin
        self._ssl = ssl_context(ca_file)
        self._backend = _Backend()
        self._origins: OrderedDict[str, tuple[httpcore.AsyncConnectionPool, asyncio.Semaphore]]
        self._origins = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def _pool(self, origin: str) -> tuple[httpcore.AsyncConnectionPool, asyncio.Semaphore]:
        found = self._origins.get(origin)
        if found is not None:
            self._origins.move_to_end(origin)
            return found
        pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl,
            max_connections=self.connections_per_origin,
            max_keepalive_connections=self.connections_per_origin,
            keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=self._backend,
        )
        found = self._origins[origin] = (pool, asyncio.Semaphore(self.connections_per_origin))
        while len(self._origins) > MAX_ORIGINS:
            _, (old, _) = self._origins.popitem(last=False)
            task = asyncio.create_task(old.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return found

    async def post(
        self, target: Target, headers: dict[str, str], body: bytes, *, limit: int
    ) -> Answer:
        """POST ``body`` to the checked target, redirects not followed, and read at most
        ``limit`` bytes of the answer, the whole exchange within the timeout (a receiver that
        answers a byte at a time gains nothing). Raises one of
        ``ERRORS`` when no answer came."""
        destination = _destination(target.url)
        pool, connections = self._pool(destination.origin)
        extensions: dict[str, Any] = {
            "timeout": dict.fromkeys(("connect", "read", "write", "pool"), self.timeout)
        }
        if target.address is not None:
            extensions["sni_hostname"] = target.host
        request = httpcore.Request(
            b"POST",
            httpcore.URL(
                scheme=destination.scheme,
                host=(target.address or target.host).encode("idna"),
                port=destination.port,
                target=destination.target,
            ),
            headers=[
                (b"host", destination.host_header),
                (b"content-length", str(len(body)).encode()),
                *((name.encode(), value.encode()) for name, value in headers.items()),
            ],
            content=body,
            extensions=extensions,
        )
        # Deliveries beyond the origin's connections wait here rather than in httpcore's pool;
        # the timeout runs once one of them is ours. anyio's, not asyncio's: httpcore shields
        # its cleanup (a connection's state, the pool's books) from anyio's cancellation only,
        # and a deadline that fell inside it would leave a connection stuck in the pool.
        async with connections:
            with anyio.fail_after(self.timeout):
                response = await pool.handle_async_request(request)
                try:
                    excerpt = bytearray()
                    async for chunk in response.aiter_stream():
                        excerpt += chunk
                        if len(excerpt) >= limit:
                            break
                finally:
                    await response.aclose()
        return Answer(
            status_code=response.status,
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in response.headers
            },
            excerpt=bytes(excerpt[:limit]),
        )

    async def aclose(self) -> None:
        pools = [pool for pool, _ in self._origins.values()]
        self._origins.clear()
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)

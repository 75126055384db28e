"""The delivery worker's HTTP client: one POST, its answer's status, headers and first bytes.

h11 (the HTTP/1.1 state machine httpx itself is built on) over asyncio streams, with the
connections kept alive between deliveries, by destination. It does only what a delivery needs:
redirects are not followed, an answer's body is read up to ``excerpt`` bytes (a connection whose
answer is not read to its end is closed, not reused), and the whole exchange is bounded by one
timeout. httpx's layers (its client, httpcore's pool and anyio's streams) cost a delivery
several times its own work, most of a worker's time; the tester, which sends one request now
and then and shows it, keeps httpx.

TLS is verified as httpx verifies it (certifi's certificates), for the endpoint's host name,
also when the connection goes to the address the SSRF guard checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import certifi
import h11

# A connection left idle longer than this is closed rather than reused: receivers close theirs
# after a while, often a few seconds (httpx keeps them 5 s too).
KEEPALIVE_SECONDS = 5.0
READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a connection goes: scheme, the address (or name) connected to, port, and the host
    name that TLS verifies."""

    scheme: str
    address: str
    port: int
    host: str


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    headers: Mapping[str, str]
    excerpt: bytes


class _Stale(Exception):
    """A kept-alive connection that the other end had closed: nothing was answered on it."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    state: h11.Connection
    idle_since: float = 0.0

    def usable(self, now: float) -> bool:
        return (
            now - self.idle_since < KEEPALIVE_SECONDS
            and not self.writer.is_closing()
            and not self.reader.at_eof()
        )

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Connections by destination, reused while kept alive."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._idle: dict[Destination, list[_Connection]] = {}
        # certifi's authorities, as httpx trusts them, unless told otherwise (tests).
        self._tls = tls

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=certifi.where())
        return self._tls

    async def _connect(self, destination: Destination) -> _Connection:
        tls = destination.scheme == "https"
        reader, writer = await asyncio.open_connection(
            destination.address,
            destination.port,
            ssl=self._context() if tls else None,
            server_hostname=destination.host if tls else None,
            limit=READ_BYTES,
        )
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    def _kept(self, destination: Destination) -> _Connection | None:
        idle = self._idle.get(destination)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def post(
        self,
        destination: Destination,
        *,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        excerpt: int,
        timeout: float,
    ) -> Answer:
        """POST ``body`` to ``target`` (path and query) at ``destination``: its answer, with
        at most ``excerpt`` bytes of its body. Raises TimeoutError past ``timeout``, OSError
        (ssl.SSLError among them) or h11's errors when no answer came."""
        async with asyncio.timeout(timeout):
            connection = self._kept(destination)
            if connection is not None:
                try:
                    return await self._exchange(
                        connection, destination, target, headers, body, excerpt
                    )
                except _Stale:
                    pass  # closed by the other end while idle: once more on a new connection
            connection = await self._connect(destination)
            try:
                return await self._exchange(connection, destination, target, headers, body, excerpt)
            except _Stale:
                raise ConnectionResetError("the connection was closed without an answer") from None

    async def _exchange(
        self,
        connection: _Connection,
        destination: Destination,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        excerpt: int,
    ) -> Answer:
        state = connection.state
        kept = connection.idle_since > 0
        try:
            request = h11.Request(
                method="POST",
                target=target,
                headers=[*headers.items(), ("content-length", str(len(body)))],
            )
            connection.writer.write(
                state.send(request)
                + state.send(h11.Data(data=body))
                + state.send(h11.EndOfMessage())
            )
            await connection.writer.drain()
            response: h11.Response | None = None
            read = bytearray()
            complete = False
            received = False
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    data = await connection.reader.read(READ_BYTES)
                    if not data and not received and kept:
                        raise _Stale()
                    received = True
                    state.receive_data(data)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    read += event.data
                    if len(read) >= excerpt:
                        break  # enough: the rest is not read, and the connection not reused
                elif isinstance(event, h11.EndOfMessage):
                    complete = True
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("the connection was closed before its answer")
                # h11.InformationalResponse (100 Continue): the answer is still to come.
        except BaseException:
            connection.close()
            raise
        assert response is not None
        if complete and state.our_state is h11.DONE and state.their_state is h11.DONE:
            state.start_next_cycle()
            connection.idle_since = time.monotonic()
            self._idle.setdefault(destination, []).append(connection)
        else:
            connection.close()
        return Answer(
            status_code=response.status_code,
            headers={
                name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers
            },
            excerpt=bytes(read[:excerpt]),
        )

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
                with contextlib.suppress(Exception):
                    await connection.writer.wait_closed()

"""The fan-out's webhook receiver: a small HTTP/1.1 server on asyncio (uvloop), in a process of
its own, that answers every POST 204 at once and records when it arrived.

    python -m bench.receiver --port 9001

Each delivery is kept as (arrival, path, ``webhook-id``, body): the time from ``time.time()``
when its last byte was read, before the answer is written; bodies are parsed only when
``GET /records`` asks for them, so that the receiver does as little as it can while deliveries
arrive. ``GET /records`` returns them as JSON and forgets them. Nothing is verified: the suite
checks signatures (tests/webhooks), this measures speed; the receiver must never be what limits
it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench import HOST

NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"
MAX_HEAD = 64 * 1024


class Received:
    def __init__(self) -> None:
        self.records: list[tuple[float, str, str, bytes]] = []

    def take(self) -> bytes:
        records, self.records = self.records, []
        return json.dumps(
            [[at, path, webhook_id, body.decode()] for at, path, webhook_id, body in records]
        ).encode()


class Connection(asyncio.Protocol):
    def __init__(self, received: Received) -> None:
        self.received = received
        self.buffer = bytearray()
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport's subclasses, but write all the same.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        """Answer the first request in the buffer, if it is all there."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD and self.transport is not None:
                self.transport.close()
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return False
        arrived = time.time()
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        assert self.transport is not None
        if method == "GET" and path == "/records":
            payload = self.received.take()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            return True
        self.received.records.append((arrived, path, headers.get("webhook-id", ""), body))
        self.transport.write(NO_CONTENT)
        return True


async def serve(port: int) -> None:
    received = Received()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(received), HOST, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn's standard extra brings it
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()

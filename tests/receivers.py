"""A real webhook receiver: uvicorn on a loopback port, in the test's event loop. It verifies
every delivery with the ``standardwebhooks`` package (the reference implementation, never our
signing code) and answers what the test tells it to."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.types import Receive, Scope, Send

from certificates import Certificates
from factories import Tenant, create_endpoint
from servers import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    # The secrets, of those the receiver knows, that verify this delivery.
    verified_by: list[str]

    @property
    def payload(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class Receiver:
    def __init__(
        self, *secrets: str, port: int | None = None, tls: Certificates | None = None
    ) -> None:
        self.secrets = list(secrets)
        self.port = port or free_port()
        # Over https, its URL names the host its certificate is for.
        self.tls = tls
        self.received: list[Received] = []
        self.answers: deque[Answer] = deque()
        self.default = Answer()
        # While set and not released, deliveries are received but not answered.
        self.hold: asyncio.Event | None = None
        self._arrived = asyncio.Condition()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"https://{self.tls.host}:{self.port}/hooks"
        return f"http://127.0.0.1:{self.port}/hooks"

    def verified(self) -> list[Received]:
        return [r for r in self.received if r.verified_by]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        verified_by = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified_by.append(secret)
        answer = self.answers.popleft() if self.answers else self.default
        async with self._arrived:
            self.received.append(Received(headers, body, verified_by))
            self._arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until ``count`` deliveries have arrived (a bound against hanging, not a
        measurement)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received

    async def start(self) -> None:
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=self.tls.cert_file if self.tls is not None else None,
            ssl_keyfile=self.tls.key_file if self.tls is not None else None,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            assert not self._task.done(), "the receiver did not start"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def endpoint_for(
    client: httpx.AsyncClient, tenant: Tenant, receiver: Receiver, **fields: Any
) -> dict[str, Any]:
    """An endpoint of the tenant's account that delivers to ``receiver``, which learns its
    secret."""
    created = await create_endpoint(client, tenant, receiver.url, **fields)
    receiver.secrets.append(created["secret"])
    return created

"""What every request leaves behind: its id, its line in the log, its latency in the metrics.

``RequestObserver`` wraps the whole app (the /verify fast path included). A request's id is the
client's ``X-Request-Id`` when it is a sane token (letters, digits, ``-``, ``_``, ``.``, up to
128), else a new one; the response carries it back. The line (logger ``keyservice.access``) has
the id, method, route template (``/v1/keys/{key_id}``, never the raw path, which may hold
anything), status, duration, client address, and the key and account that verification found
(``note_key``).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyservice import logs, metrics

ACCESS = logging.getLogger("keyservice.access")
HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
_KEY = "keyservice.key"
# A path no route matched is not a label: every random path would be a new series.
UNMATCHED = "unmatched"


_ROUTE = "keyservice.route"


def note_route(scope: Scope, template: str) -> None:
    """Name the request's route template, for a route whose own path lacks the prefix it was
    included under (the console's, whose prefix is a setting)."""
    scope[_ROUTE] = template


def note_key(scope: Scope, key_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
    """Say which key (and account) the request was verified with, for its line in the log."""
    scope[_KEY] = (key_id, account_id)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == HEADER and _SANE_ID.match(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


def _route(scope: Scope, fallback: str | None) -> str:
    noted = scope.get(_ROUTE)
    if noted is not None:
        return str(noted)
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return fallback or UNMATCHED


class RequestObserver:
    def __init__(self, app: ASGIApp, *, fast_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        # Paths answered ahead of the router (no route in the scope): their own template.
        self.fast_paths = fast_paths
        self._access_handlers: list[logs.BackgroundHandler] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = 500  # what the server answers if the app ends without answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            path = scope["path"]
            route = _route(scope, path if path in self.fast_paths else None)
            method = scope["method"]
            metrics.http_request(route, method, status, seconds)
            if ACCESS.isEnabledFor(logging.INFO):
                _log(scope, request_id, method, route, status, seconds, self._handlers())

    def _handlers(self) -> list[logs.BackgroundHandler]:
        # Looked up once: the logging configuration is done before the first request.
        handlers = self._access_handlers
        if handlers is None:
            handlers = self._access_handlers = logs.access_handlers()
        return handlers


def _log(
    scope: Scope,
    request_id: bytes,
    method: str,
    route: str,
    status: int,
    seconds: float,
    handlers: list[logs.BackgroundHandler],
) -> None:
    key_id, account_id = scope.get(_KEY) or (None, None)
    client = scope.get("client")
    fields = (
        request_id.decode(),
        method,
        route,
        status,
        round(seconds * 1000, 2),
        client[0] if client else None,
        str(key_id) if key_id else None,
        str(account_id) if account_id else None,
    )
    if handlers:
        line = (time.time(), *fields)
        for handler in handlers:
            handler.access(line)
        return
    extra: dict[str, Any] = dict(zip(logs.ACCESS_FIELDS, fields, strict=True))
    ACCESS.info("%s %s %d", method, route, status, extra=extra)

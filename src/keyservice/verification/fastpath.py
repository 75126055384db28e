"""``POST /v1/verify`` answered ahead of FastAPI's routing and dependency machinery.

/verify is the request every other request of the product waits on, and the work it does on a
cache hit (a hash, a dict lookup, a few checks) costs far less than the framework around it:
routing, dependency resolution, Request and Response objects cost several times more. This
adapter reads the body from the ASGI channel, validates it with the same model, calls the same
``answer()`` as the documented route, sends the same bytes and headers as its
``Answer.response()``, and renders errors with the same problem handlers, so both are one
behaviour. The route
stays declared, for the OpenAPI document and for any app built without this middleware.
"""

from __future__ import annotations

import json

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from keyservice.errors import (
    KeyServiceError,
    error_response,
    http_error_response,
    validation_response,
)
from keyservice.verification.answer import answer
from keyservice.verification.dependency import peer_address
from keyservice.verification.rendering import Answer
from keyservice.verification.schemas import VerifyRequest
from keyservice.verification.verifier import Verifier

PATH = "/v1/verify"


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False  # like FastAPI: a body is JSON only when it says so
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _route_path(scope: Scope) -> str:
    """The path below the app's root path (``uvicorn --root-path``), as the router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class _Unparsable(Exception):
    """The body is no JSON this route reads; ``errors`` say why, without quoting it."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.errors = [{"loc": ("body",), "msg": msg, "type": "json_invalid"}]


def _parse(raw: bytes) -> VerifyRequest:
    try:
        return VerifyRequest.model_validate_json(raw)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            raise
    # A byte-order mark or UTF-16/32: the standard library's parser, like FastAPI's, reads them;
    # pydantic's does not. Its errors are reported without the body, which may hold a key.
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _Unparsable("JSON nested too deeply") from None
    except ValueError:
        raise _Unparsable("JSON decode error: the body is not valid JSON") from None
    return VerifyRequest.model_validate(data)


async def _read_body(receive: Receive) -> bytes:
    """The request's body, as ``Request.body()`` reads it, without its stream's machinery."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class VerifyFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        result = await self._respond(scope, receive)
        if isinstance(result, Response):
            await result(scope, receive, send)
            return
        # What result.response() sends, without building it.
        headers = result.raw_headers()
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        await send({"type": "http.response.body", "body": result.content})

    async def _respond(self, scope: Scope, receive: Receive) -> Answer | Response:
        verifier: Verifier = scope["app"].state.verifier
        try:
            raw = await _read_body(receive)
        except HTTPException as exc:  # the body-size limit
            return http_error_response(Request(scope, receive), exc)
        headers = Headers(scope=scope)
        if not _is_json(headers.get("content-type")):
            # What FastAPI answers when a model body is not sent as JSON.
            return validation_response(
                Request(scope, receive),
                [
                    {
                        "loc": ("body",),
                        "msg": "Input should be a valid dictionary or object to extract fields "
                        "from",
                        "type": "model_attributes_type",
                        # As FastAPI reports a body it did not read as JSON: the raw bytes
                        # (never echoed), which the problem's renderer tells apart.
                        "input": raw,
                    }
                ],
            )
        if not raw:
            return validation_response(
                Request(scope, receive),
                [{"loc": ("body",), "msg": "Field required", "type": "missing"}],
            )
        try:
            body = _parse(raw)
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
            return validation_response(Request(scope, receive), errors)
        except _Unparsable as exc:
            return validation_response(Request(scope, receive), exc.errors)
        try:
            return await answer(verifier, body, headers, peer_address(scope))
        except KeyServiceError as exc:
            return error_response(Request(scope, receive), exc)

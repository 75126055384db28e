"""``POST /v1/verify`` answered ahead of FastAPI's routing and dependency machinery.

/verify is the request every other request of the product waits on, and the work it does on a
cache hit (a hash, a dict lookup, a few checks) costs far less than the framework around it:
routing, dependency resolution, Request and Response objects cost several times more. This
adapter reads the body from the ASGI channel, validates it with the same model, calls the same
``answer()`` as the documented route and sends the same bytes and headers as its
``Answer.response()``. Anything but a well-formed JSON body (no JSON content type, nothing to
parse, a body the model refuses) is handed, with the body already read, to the documented route,
so that FastAPI answers it as it answers every other route: one behaviour, written once.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyservice.errors import (
    KeyServiceError,
    error_response,
    http_error_response,
)
from keyservice.observability import note_key
from keyservice.verification.answer import answer
from keyservice.verification.dependency import peer_address
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


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives ``body`` again, then whatever the client sends next (its
    disconnection)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


class VerifyFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        try:
            raw = await _read_body(receive)
        except HTTPException as exc:  # the body-size limit
            await http_error_response(Request(scope, receive), exc)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        body = _parse(headers, raw)
        if body is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        verifier: Verifier = scope["app"].state.verifier
        try:
            result = await answer(verifier, body, headers, peer_address(scope))
        except KeyServiceError as exc:
            await error_response(Request(scope, receive), exc)(scope, receive, send)
            return
        if result.key is not None:
            note_key(scope, *result.key)
        # What result.response() sends, without building it.
        raw_headers = result.raw_headers()
        await send({"type": "http.response.start", "status": result.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": result.content})


def _parse(headers: Headers, raw: bytes) -> VerifyRequest | None:
    """The body, if it is JSON that the model accepts; else None, for the route to answer."""
    if not raw or not _is_json(headers.get("content-type")):
        return None
    try:
        return VerifyRequest.model_validate_json(raw)
    except ValidationError:
        return None

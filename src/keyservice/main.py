"""The application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyservice import __version__, apidocs, console, metrics
from keyservice.accounts.router import router as accounts_router
from keyservice.accounts.router import sessions_router
from keyservice.applications.router import router as applications_router
from keyservice.audit.router import router as audit_router
from keyservice.availability import Availability
from keyservice.config import Settings, get_settings
from keyservice.errors import (
    PayloadTooLarge,
    error_response,
    install_error_handlers,
    problem_media_types,
    problem_response,
    unexpected_error_response,
)
from keyservice.events.router import router as events_router
from keyservice.health import router as health_router
from keyservice.keys.router import router as keys_router
from keyservice.migrate import head_revision
from keyservice.observability import RequestObserver
from keyservice.runtime import Runtime
from keyservice.usage.router import router as usage_router
from keyservice.verification.fastpath import PATH as FAST_PATH
from keyservice.verification.fastpath import VerifyFastPath
from keyservice.verification.router import router as verification_router
from keyservice.webhooks.router import router as webhooks_router

DESCRIPTION = """
keyservice issues, verifies, rate-limits and meters API keys for your product's API.

**Authentication.** Every `/v1` route takes a keyservice key in `Authorization: Bearer <key>`,
`Authorization: <key>` or `x-api-key: <key>`; never in a URL. Management routes need keyservice's
own scopes (`keyservice:keys:write`, ...) and, for a user's key, a role that allows them: owners
and admins manage, members read.

**Errors** are RFC 9457 `application/problem+json` objects whose `type` is stable per error.
"""


# Allocations between two collections of the youngest generation (CPython's default is 700).
# Objects of requests in flight, and a usage flush's rows, outlive a collection that comes every
# few requests and are promoted to the oldest generation; its full collections then come every few
# seconds, each a pause of a hundred milliseconds and more with 10,000 keys cached. Collecting every
# 50,000 allocations lets such objects die young, as they are.
GC_YOUNG_THRESHOLD = 50_000


class _Collector:
    """The garbage collector is the process's: apps serving in one process (tests run several)
    share its tuning, undone when the last stops."""

    serving = 0
    threshold: tuple[int, ...] = ()


@contextmanager
def tuned_gc() -> Iterator[None]:
    """While serving: what the app built at startup (modules, models, schemas) is moved out of the
    garbage collector's reach (``gc.freeze``), and the youngest generation is collected less
    often."""
    if _Collector.serving == 0:
        _Collector.threshold = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *_Collector.threshold[1:])
    _Collector.serving += 1
    gc.freeze()
    try:
        yield
    finally:
        _Collector.serving -= 1
        if _Collector.serving == 0:
            gc.set_threshold(*_Collector.threshold)
            gc.unfreeze()


def parameters_never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop ``null`` from the schemas of path, query and header parameters in an OpenAPI document.

    An optional parameter is typed ``X | None`` so that its absence reaches the route as ``None``,
    and FastAPI documents that as "X or null". But a parameter is present or absent, never null:
    a client that believed the document and sent ``X-Account-Id: null`` got a 422."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                declared = parameter["schema"]
                variants = [v for v in declared.get("anyOf", ()) if v != {"type": "null"}]
                if "anyOf" not in declared or len(variants) == len(declared["anyOf"]):
                    continue
                del declared["anyOf"]
                if len(variants) == 1:
                    declared.update(variants[0])
                else:
                    declared["anyOf"] = variants
    return schema


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = HTTPException(413, f"The request body exceeds {self.limit} bytes")
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = problem_response(
                    Request(scope),
                    status=413,
                    type_uri=PayloadTooLarge.type_uri(),
                    title=PayloadTooLarge.title,
                    detail=too_large.detail,
                )
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # An HTTPException passes through FastAPI's body parsing to the 413 handler.
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)


def _install_outage_handlers(app: FastAPI, availability: Availability) -> None:
    """A database that cannot be reached is a 503 with ``Retry-After`` (the outage logged once,
    when it begins), on every route; any other database error stays a 500."""

    async def database_error(request: Request, exc: Exception) -> Response:
        if availability.failed(exc):
            return error_response(request, availability.error())
        return unexpected_error_response(request)

    for error in (DBAPIError, OSError, asyncpg.PostgresError):
        app.add_exception_handler(error, database_error)


def create_app(
    settings: Settings | None = None,
    *,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
) -> FastAPI:
    """Build the ASGI app. With ``sessionmaker`` the caller owns the database (tests do);
    otherwise the app's lifespan starts and stops its runtime (``keyservice.runtime``): the
    engine, the invalidation listener (PostgreSQL), the usage flusher and the rest."""
    settings = settings or get_settings()
    metrics.configure(enabled=settings.metrics_enabled)
    runtime = Runtime(settings, sessionmaker=sessionmaker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            with tuned_gc():
                yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="keyservice",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs is keyservice's own (apidocs), with Swagger UI served from here, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = parameters_never_null(problem_media_types(original_openapi()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.head_revision = head_revision()
    app.state.runtime = runtime
    # What the routes use, by name.
    app.state.sessionmaker = runtime.sessionmaker
    app.state.verifier = runtime.verifier
    app.state.key_cache = runtime.cache
    app.state.availability = runtime.availability
    app.state.keyring = runtime.keyring
    app.state.ssrf_policy = runtime.ssrf_policy
    app.state.product_events = runtime.product_events

    install_error_handlers(app)
    _install_outage_handlers(app, runtime.availability)
    # The last added is the outermost: the size limit applies to the fast path too.
    app.add_middleware(VerifyFastPath)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    # Outermost: every request has an id, a line in the log and its latency in the metrics.
    app.add_middleware(RequestObserver, fast_paths=(FAST_PATH,))
    for router in (
        health_router,
        verification_router,
        accounts_router,
        sessions_router,
        applications_router,
        keys_router,
        usage_router,
        events_router,
        webhooks_router,
        audit_router,
    ):
        app.include_router(router)
    apidocs.install(app)
    # After the API's error handlers: the console's pages wrap them for its own paths.
    console.install(app, settings)
    return app

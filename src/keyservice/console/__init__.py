"""The console: the "Settings > API Access" pages, served by keyservice on the same services as
its API (``keyservice.console.web`` says how a page is protected)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from keyservice.config import Settings
from keyservice.console import web
from keyservice.console.pages import routers
from keyservice.errors import KeyServiceError

STATIC = Path(__file__).parent / "static"


class ConsoleStatic(StaticFiles):
    """The vendored assets, with the console's headers; versioned names, so cached for long."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(
            {
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "public, max-age=86400",
                "Content-Security-Policy": web.CONTENT_SECURITY_POLICY,
            }
        )
        return response


def install(app: FastAPI, settings: Settings) -> None:
    if not settings.console_enabled:
        return
    prefix = settings.console_prefix
    app.mount(prefix + "/static", ConsoleStatic(directory=STATIC), name="console-static")
    for router in routers:
        app.include_router(
            router,
            prefix=prefix,
            include_in_schema=False,
            dependencies=[Depends(web.name_route)],
        )
    _install_error_pages(app, prefix)


def _install_error_pages(app: FastAPI, prefix: str) -> None:
    """Errors on the console's paths are pages; elsewhere the API's problem details, as before."""
    api_handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = dict(
        app.exception_handlers
    )

    def on_console(request: Request) -> bool:
        path = request.url.path
        return path == prefix or path.startswith(prefix + "/")

    def visitor_of(request: Request) -> web.Visitor | None:
        return getattr(request.state, "console_visitor", None)

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, web.SignInRequired)
        response: Response
        if request.headers.get("HX-Request"):
            # htmx follows this with a full page load rather than swapping a fragment.
            response = Response(status_code=204, headers={"HX-Redirect": web.sign_in_url(request)})
        else:
            response = web.redirect(request, "")
            response.headers["Location"] = web.sign_in_url(request)
        if exc.clear_cookie:
            response.delete_cookie(web.SESSION_COOKIE, path=prefix)
        return response

    async def no_account(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, web.NoAccount)
        return web.render(request, "no_account.html", email=exc.email, csrf_token=exc.csrf_token)

    async def keyservice_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KeyServiceError)
        if not on_console(request):
            return await api_handlers[KeyServiceError](request, exc)
        return web.problem_page(
            request, web.Problem.of(exc), headers=exc.headers, visitor=visitor_of(request)
        )

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not on_console(request):
            return await api_handlers[RequestValidationError](request, exc)
        # A console page's parameters come from its own links: a bad one is a page not found.
        problem = web.Problem(
            title="Page not found", detail="This address does not lead to a page.", status=404
        )
        return web.problem_page(request, problem, visitor=visitor_of(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not on_console(request):
            return await api_handlers[StarletteHTTPException](request, exc)
        titles = {404: "Page not found", 405: "Not allowed here"}
        problem = web.Problem(
            title=titles.get(exc.status_code, "Request refused"),
            detail="This address does not lead to a page." if exc.status_code == 404 else "",
            status=exc.status_code,
        )
        return web.problem_page(request, problem, visitor=visitor_of(request))

    app.add_exception_handler(web.SignInRequired, sign_in_required)
    app.add_exception_handler(web.NoAccount, no_account)
    app.add_exception_handler(KeyServiceError, keyservice_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)

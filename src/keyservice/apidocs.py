"""The interactive API documentation at ``/docs``: Swagger UI, served by keyservice itself.

FastAPI's own page loads Swagger UI from a CDN, so it is blank on a network without internet,
and starts it with an inline script. This page loads the vendored copy in ``static/swagger-ui/``
and ``static/docs.js``, and is sent with a Content-Security-Policy that allows nothing but this
origin: no inline script, no other host.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PATH = "/static"

# No inline script or style: Swagger UI sets its styles through the DOM, which the policy allows
# (checked in a browser with every operation and model open and requests sent). Its stylesheet's
# icons are SVG data: URIs, hence img-src data:.
DOCS_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

# Set here, not guessed from the host's MIME database, which may map .js to text/plain.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/swagger-ui/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{static}/docs.js"></script>
</body>
</html>
"""


class StaticAssets(StaticFiles):
    """The page's scripts, stylesheet and images, with their media types set and not sniffed;
    nothing else under ``static/`` (licences, notes) is served."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type is None:
            raise HTTPException(404)
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["content-type"] = media_type
        response.headers["x-content-type-options"] = "nosniff"
        return response


router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    page = PAGE.format(
        title=html.escape(f"{request.app.title} API"),
        static=html.escape(root + STATIC_PATH),
        openapi_url=html.escape(root + (request.app.openapi_url or "")),
    )
    return HTMLResponse(
        page,
        headers={
            "content-security-policy": DOCS_CSP,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets; FastAPI's own pages (docs, redoc) must be off."""
    app.include_router(router)
    app.mount(STATIC_PATH, StaticAssets(directory=STATIC_DIR), name="static")

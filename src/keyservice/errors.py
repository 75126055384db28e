"""The error hierarchy and its RFC 9457 ``application/problem+json`` rendering.

Every error has a stable ``type`` URI (``urn:keyservice:problem:<slug>``) that clients can switch
on; ``title`` is constant per type and ``detail`` explains this occurrence. Nothing in a problem
ever carries a secret or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger(__name__)

PROBLEM_TYPE_PREFIX = "urn:keyservice:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class KeyServiceError(Exception):
    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"
    # The machine-readable answer of POST /v1/verify when verification fails this way.
    code: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.extensions = extensions

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_TYPE_PREFIX + cls.slug


class BadRequest(KeyServiceError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class AmbiguousKey(BadRequest):
    slug = "ambiguous-key"
    title = "More than one API key in the request"


class Unauthorized(KeyServiceError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"
    # RFC 6750 section 3.1: error="invalid_token" when a key was sent but is not good.
    www_error: ClassVar[str | None] = "invalid_token"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        challenge = 'Bearer realm="keyservice"'
        if self.www_error:
            challenge += f', error="{self.www_error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, **extensions)


class MissingKey(Unauthorized):
    slug = "missing-key"
    title = "No API key in the request"
    www_error = None


class MalformedKey(Unauthorized):
    slug = "malformed-key"
    title = "The API key is malformed"
    code = "MALFORMED"


class UnknownKey(Unauthorized):
    slug = "unknown-key"
    title = "The API key is not valid"
    code = "NOT_FOUND"


class RevokedKey(Unauthorized):
    slug = "revoked-key"
    title = "The API key has been revoked"
    code = "REVOKED"


class ExpiredKey(Unauthorized):
    slug = "expired-key"
    title = "The API key has expired"
    code = "EXPIRED"


class InvalidCredentials(KeyServiceError):
    status = 401
    slug = "invalid-credentials"
    title = "The email or the password is not correct"


class Forbidden(KeyServiceError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class InsufficientScope(Forbidden):
    slug = "insufficient-scope"
    title = "The API key lacks a required scope"
    code = "INSUFFICIENT_SCOPE"


class InsufficientRole(Forbidden):
    slug = "insufficient-role"
    title = "The user's role in this account does not allow this"
    code = "INSUFFICIENT_SCOPE"


class AccountRequired(BadRequest):
    slug = "account-required"
    title = "This key reaches several accounts: name one"
    code = "ACCOUNT_REQUIRED"


class AccountForbidden(Forbidden):
    slug = "account-forbidden"
    title = "This key does not reach that account"
    code = "ACCOUNT_FORBIDDEN"


class NotFound(KeyServiceError):
    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(KeyServiceError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(KeyServiceError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(KeyServiceError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class TooManyRequests(KeyServiceError):
    status = 429
    slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **extensions: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)


class OverLimit(KeyServiceError):
    """Refused by the key's rate limit or quota; ``headers`` carry the rate-limit fields, and
    ``decision`` the limiter's verdict (for /verify's answer)."""

    status = 429

    def __init__(self, decision: Any, headers: Mapping[str, str]) -> None:
        super().__init__(None, headers=headers)
        self.decision = decision


class RateLimited(OverLimit):
    slug = "rate-limited"
    title = "The key is over its rate limit"
    code = "RATE_LIMITED"


class QuotaExceeded(OverLimit):
    slug = "quota-exceeded"
    title = "The key has used its monthly quota"
    code = "QUOTA_EXCEEDED"


class TooManyFailures(TooManyRequests):
    slug = "too-many-failures"
    title = "Too many failed attempts from this client; try again later"


class UnsupportedMediaType(KeyServiceError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ValidationFailed(KeyServiceError):
    status = 422
    slug = "validation-error"
    title = "The request is not valid"


class InvalidScope(ValidationFailed):
    slug = "invalid-scope"
    title = "A scope is not allowed here"


class InvalidWebhookUrl(ValidationFailed):
    slug = "invalid-webhook-url"
    title = "The webhook URL cannot be used"


class UnknownEventType(ValidationFailed):
    slug = "unknown-event-type"
    title = "An event type is not in the catalogue"


class InvalidEventData(ValidationFailed):
    slug = "invalid-event-data"
    title = "The event's data is not valid"


class ServiceUnavailable(KeyServiceError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database does not answer: nothing that needs it can be done now."""

    slug = "database-unavailable"
    title = "The database is unreachable; try again shortly"
    code = "UNAVAILABLE"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:keyservice:problem:not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "Application not found",
                    "instance": "/v1/applications/0b9c...",
                }
            ]
        },
    )

    type: str = Field(description="Stable URI identifying the kind of problem")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Move error responses from ``application/json`` to ``application/problem+json`` in an
    OpenAPI document: FastAPI files a response ``model`` under the app's default media type."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if not status.startswith(("4", "5")) or "application/json" not in content:
                    continue
                if content["application/json"].get("schema") != {
                    "$ref": "#/components/schemas/Problem"
                }:
                    continue  # an answer of its own (/v1/verify's 503), not a problem
                problem = content.setdefault(PROBLEM_MEDIA_TYPE, {})
                problem["schema"] = {"$ref": "#/components/schemas/Problem"}
                del content["application/json"]
    return schema


def problem_response(
    request: Request,
    *,
    status: int,
    type_uri: str,
    title: str,
    detail: str | None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_uri,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if extensions:
        body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def responses(*errors: type[KeyServiceError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given errors, grouped by status."""
    by_status: dict[int, list[type[KeyServiceError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    out: dict[int | str, dict[str, Any]] = {}
    for status, errs in sorted(by_status.items()):
        out[status] = {
            "model": Problem,
            "description": "; ".join(f"`{e.slug}`: {e.title}" for e in errs),
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "example": {
                        "type": errs[0].type_uri(),
                        "title": errs[0].title,
                        "status": status,
                        "detail": errs[0].title,
                    }
                }
            },
        }
    return out


_STATUS_ERRORS: dict[int, type[KeyServiceError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_response(request: Request, exc: KeyServiceError) -> JSONResponse:
    return problem_response(
        request,
        status=exc.status,
        type_uri=exc.type_uri(),
        title=exc.title,
        detail=exc.detail,
        headers=exc.headers,
        extensions=exc.extensions,
    )


SEND_JSON = "send JSON, with the header 'Content-Type: application/json'"


def _body_not_json(raw_errors: Sequence[Any]) -> bool:
    """Whether the body failed because it was not read as JSON: FastAPI parses a body as JSON
    only when its content type says so, and otherwise validates the raw bytes, which no model
    accepts."""
    return any(
        tuple(err.get("loc", ()))[:1] == ("body",) and isinstance(err.get("input"), bytes)
        for err in raw_errors
    )


def _received_content_type(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
    if not content_type:
        return "the request has no Content-Type"
    return f"the request's Content-Type is {content_type[:64]!r}"


def validation_response(request: Request, raw_errors: Sequence[Any]) -> JSONResponse:
    # Never echo the submitted value: it may be a password or a key.
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in raw_errors
    ]
    first = errors[0] if errors else None
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else None
    if first is not None and _body_not_json(raw_errors):
        # Pydantic's words ("a valid dictionary or object to extract fields from") do not say
        # that the body was fine but not labelled as JSON.
        errors = [{"loc": ["body"], "msg": SEND_JSON, "type": first["type"]}]
        detail = f"body: {SEND_JSON} ({_received_content_type(request)})"
    return problem_response(
        request,
        status=ValidationFailed.status,
        type_uri=ValidationFailed.type_uri(),
        title=ValidationFailed.title,
        detail=detail,
        extensions={"errors": errors},
    )


# The methods a 405's Allow may name: every method our routes are declared with.
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method that the request's path accepts, for a 405's ``Allow``.

    Starlette answers 405 from the first route whose path matched and lists that route's methods
    only; a path served by several routes (``GET`` here, ``PATCH`` there) accepts them all. Each
    method is tried against the app's routes as they match requests."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def http_error_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    error = _STATUS_ERRORS.get(exc.status_code)
    if error is None:
        return problem_response(
            request,
            status=exc.status_code,
            type_uri="about:blank",
            title=str(exc.detail),
            detail=None,
            headers=headers,
        )
    return problem_response(
        request,
        status=error.status,
        type_uri=error.type_uri(),
        title=error.title,
        detail=str(exc.detail) if exc.detail else None,
        headers=headers,
    )


def unexpected_error_response(request: Request) -> JSONResponse:
    """A 500 that says nothing of the error; called while handling it, which is logged."""
    # The exception's message may quote SQL parameters; the traceback goes to the log, whose
    # records never contain a key (only hashes reach SQL).
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        status=500,
        type_uri=KeyServiceError.type_uri(),
        title=KeyServiceError.title,
        detail="An unexpected error occurred",
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KeyServiceError)
    async def _keyservice_error(request: Request, exc: KeyServiceError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(request, exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI answers a body that is not JSON with the 422 validation problem, except when
            # ``json.loads`` fails otherwise than with a JSONDecodeError (bytes that are not UTF-8,
            # nesting too deep): then with a bare 400 that no route documents. Such a body is not
            # JSON either; it gets the same documented answer.
            return validation_response(
                request,
                [{"loc": ("body",), "msg": "The body is not valid JSON", "type": "json_invalid"}],
            )
        return http_error_response(request, exc)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
        # A uniqueness or foreign-key check lost a race with a concurrent request (the checks
        # before the write passed in both). The transaction has been rolled back.
        return problem_response(
            request,
            status=Conflict.status,
            type_uri=Conflict.type_uri(),
            title=Conflict.title,
            detail="The request conflicts with a concurrent change; retry it",
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error_response(request)

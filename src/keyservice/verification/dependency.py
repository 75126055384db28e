"""Reading a key from a request, and the FastAPI dependencies that protect keyservice's own API."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from starlette.datastructures import Headers
from starlette.types import Scope

from keyservice import metrics
from keyservice.errors import (
    AccountForbidden,
    AccountRequired,
    AmbiguousKey,
    DatabaseUnavailable,
    ExpiredKey,
    Forbidden,
    InsufficientRole,
    InsufficientScope,
    KeyServiceError,
    MalformedKey,
    MissingKey,
    QuotaExceeded,
    RateLimited,
    RevokedKey,
    TooManyFailures,
    UnknownKey,
    ValidationFailed,
)
from keyservice.observability import note_key
from keyservice.verification.rendering import verified_headers
from keyservice.verification.service import Principal, UserPrincipal, Verified
from keyservice.verification.verifier import Verifier

# What any route protected by ``require`` may answer, for its OpenAPI ``responses``.
AUTH_ERRORS: tuple[type[KeyServiceError], ...] = (
    AmbiguousKey,
    AccountRequired,
    MissingKey,
    MalformedKey,
    UnknownKey,
    RevokedKey,
    ExpiredKey,
    InsufficientScope,
    InsufficientRole,
    AccountForbidden,
    ValidationFailed,
    TooManyFailures,
    RateLimited,
    QuotaExceeded,
    # Whatever the route: the database is unreachable, and the key was not verified before.
    DatabaseUnavailable,
)
USER_AUTH_ERRORS: tuple[type[KeyServiceError], ...] = (*AUTH_ERRORS, Forbidden)


def key_from_headers(headers: Headers) -> str | None:
    """The key from ``Authorization: Bearer <key>``, bare ``Authorization: <key>`` or ``x-api-key``.

    Authorization values of other schemes (``Basic ...``) are not keys and are ignored. Two
    different keys in one request are refused rather than guessed between.
    """
    found: set[str] = set()
    for value in headers.getlist("authorization"):
        value = value.strip()
        scheme, _, credentials = value.partition(" ")
        if not credentials:
            found.add(value)
        elif scheme.lower() == "bearer":
            found.add(credentials.strip())
    found.update(v.strip() for v in headers.getlist("x-api-key"))
    found.discard("")
    if len(found) > 1:
        raise AmbiguousKey("The request carries two different API keys; send one")
    return found.pop() if found else None


def client_address(request: Request) -> str | None:
    return peer_address(request.scope)


def peer_address(scope: Scope) -> str | None:
    """The address of the connection's other end, as the server (or its proxy-headers
    handling) reports it."""
    client = scope.get("client")
    return str(client[0]) if client else None


# Dependencies are coroutines on purpose: FastAPI runs a plain function in a thread pool, a hop
# that costs more than everything verification itself does.
async def get_verifier(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


VerifierDep = Annotated[Verifier, Depends(get_verifier)]

AccountHeader = Annotated[
    uuid.UUID | None,
    Header(
        alias="X-Account-Id",
        description="The account to act on. Needed only with a user's key that reaches several "
        "accounts.",
    ),
]


async def counted(path: str, request: Request, verifying: Awaitable[Verified]) -> Verified:
    """``verifying``'s result, counted in the metrics by ``path`` and answer, and its key noted
    for the request's line in the log."""
    try:
        verified = await verifying
    except KeyServiceError as error:
        metrics.verification(path, error.code or error.slug.upper().replace("-", "_"))
        raise
    metrics.verification(path, "VALID")
    note_key(request.scope, verified.principal.key.id, verified.principal.account_id)
    return verified


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that verifies the request's key and demands ``scopes`` on its account."""

    async def dependency(
        request: Request,
        response: Response,
        verifier: VerifierDep,
        account_id: AccountHeader = None,
    ) -> Principal:
        route = request.scope.get("route")
        verified = await counted(
            "management",
            request,
            verifier.verify(
                key_from_headers(request.headers),
                scopes=scopes,
                account_id=account_id,
                client_address=client_address(request),
                endpoint=f"{request.method} {getattr(route, 'path', request.url.path)}",
            ),
        )
        response.headers.update(verified_headers(verified))
        return verified.principal

    return dependency


def require_user(*scopes: str) -> Callable[..., Awaitable[UserPrincipal]]:
    """A dependency for a user's own things: the key must be a user's, holding ``scopes``."""

    async def dependency(request: Request, verifier: VerifierDep) -> UserPrincipal:
        verified = await verifier.verify_user(
            key_from_headers(request.headers), client_address=client_address(request)
        )
        verified.require(*scopes)
        return verified

    return dependency

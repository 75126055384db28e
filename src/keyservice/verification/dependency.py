"""Reading a key from a request, and the FastAPI dependency that protects keyservice's own API."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Header, Request
from starlette.datastructures import Headers

from keyservice.config import Settings
from keyservice.db import SessionDep
from keyservice.errors import (
    AccountForbidden,
    AccountRequired,
    AmbiguousKey,
    ExpiredKey,
    InsufficientRole,
    InsufficientScope,
    KeyServiceError,
    MalformedKey,
    MissingKey,
    RevokedKey,
    UnknownKey,
    ValidationFailed,
)
from keyservice.scopes import catalogue
from keyservice.security import KeyFormatError, ParsedKey, parse_key
from keyservice.verification import service
from keyservice.verification.service import Principal

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
)


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


def parse_presented(key: str | None, settings: Settings) -> ParsedKey:
    if key is None:
        raise MissingKey(
            "Send the key as 'Authorization: Bearer <key>', 'Authorization: <key>' or 'x-api-key'"
        )
    try:
        return parse_key(key, settings.key_prefix)
    except KeyFormatError as exc:
        raise MalformedKey(f"The API key is malformed ({exc})") from None


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


AccountHeader = Annotated[
    uuid.UUID | None,
    Header(
        alias="X-Account-Id",
        description="The account to act on. Needed only with a user's key that reaches several "
        "accounts.",
    ),
]


def require(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that verifies the request's key and demands ``scopes`` on its account."""

    async def dependency(
        request: Request, session: SessionDep, account_id: AccountHeader = None
    ) -> Principal:
        settings: Settings = request.app.state.settings
        parsed = parse_presented(key_from_headers(request.headers), settings)
        record = await service.lookup(session, parsed.hash)
        if record is None:
            raise UnknownKey()
        grace = service.authenticate(record, parsed.hash, datetime.now(UTC))
        principal = service.resolve(
            record,
            account_id=account_id,
            catalogue=catalogue(settings.scopes),
            grace=grace,
            client_address=client_address(request),
        )
        principal.require(*scopes)
        return principal

    return dependency

"""What the client raises.

Every error keyservice answers is an RFC 9457 problem; it becomes a ``ProblemError`` (a subclass
per status: ``NotFoundError``, ``RateLimitError``, ...) carrying the problem's ``type``,
``status``, ``title`` and ``detail``. An error answer without a problem body (a proxy's 502 page)
becomes one too, with the RFC's ``type`` for that case, ``about:blank``.

No message ever carries a key: keyservice's own problems never do, and anything shaped like a key
is blanked out of every text the client puts in an exception, whatever its origin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

# keyservice keys (``<prefix>_<live|test>_<base62>``) and invitation tokens: never shown.
_SECRET = re.compile(r"[a-z0-9]{1,16}_(?:live|test)_[0-9A-Za-z]{8,}|ksinv_[0-9A-Za-z_.~-]+")


def redact(text: str) -> str:
    """``text`` with anything shaped like a key or an invitation token replaced."""
    return _SECRET.sub("[redacted]", text)


class KeyserviceError(Exception):
    """Base of everything the client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class KeyserviceConnectionError(KeyserviceError):
    """keyservice could not be reached, or did not answer in time, after the retries allowed."""


class KeyserviceTimeout(KeyserviceConnectionError):
    """The request timed out (connecting, sending, reading or waiting for a pooled connection)."""


class UnexpectedResponseError(KeyserviceError):
    """A success answer whose body is not what the API document describes."""


class ProblemError(KeyserviceError):
    """keyservice (or something in front of it) answered with an error.

    ``type`` is stable per kind of error (``urn:keyservice:problem:not-found``) and is what code
    should switch on; ``detail`` explains this occurrence; ``extensions`` holds the problem's
    other members (``errors`` of a validation error, ``scope`` of an invalid scope, ...).
    ``retry_after`` is the ``Retry-After`` header in seconds, when there is one.
    """

    def __init__(
        self,
        *,
        type: str,
        status: int,
        title: str,
        detail: str | None = None,
        instance: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.type = type
        self.status = status
        self.title = redact(title)
        self.detail = redact(detail) if detail is not None else None
        self.instance = instance
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})
        self.retry_after = retry_after
        super().__init__(f"{status} {type}: {self.detail or self.title}")

    @property
    def slug(self) -> str:
        """The last part of ``type``: ``not-found`` for ``urn:keyservice:problem:not-found``."""
        return self.type.rsplit(":", 1)[-1]


class BadRequestError(ProblemError):
    """400: e.g. two different keys in one request, or a user's key that must name its account."""


class AuthenticationError(ProblemError):
    """401: the client's key is missing, malformed, unknown, revoked or expired."""


class PermissionDeniedError(ProblemError):
    """403: the client's key lacks a scope, or its user's role does not allow the call."""


class NotFoundError(ProblemError):
    """404: no such object in the account (another account's objects are 404 too)."""


class ConflictError(ProblemError):
    """409."""


class InvalidRequestError(ProblemError):
    """422: the request is not valid; ``extensions["errors"]`` says where."""


class RateLimitError(ProblemError):
    """429: over the key's rate limit or quota, or too many failures from this client.
    ``retry_after`` says when to try again; ``headers`` has the ``RateLimit`` fields."""


class ServiceUnavailableError(ProblemError):
    """502, 503 or 504: keyservice (or its database) is unavailable; ``retry_after`` when known."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidRequestError,
    429: RateLimitError,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def problem_class(status: int) -> type[ProblemError]:
    return _BY_STATUS.get(status, ProblemError)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> int | None:
    """``Retry-After`` in whole seconds: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - (now or datetime.now(UTC))).total_seconds()))

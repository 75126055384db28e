"""What the async and the sync client share: the request's headers, the retry rules, and reading
an answer (a model, a verdict, or a problem to raise)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import httpx

from keyservice_client import models
from keyservice_client._operations import Call, Operation
from keyservice_client.errors import (
    KeyserviceConnectionError,
    KeyserviceTimeout,
    UnexpectedResponseError,
    parse_retry_after,
    problem_class,
)
from keyservice_client.models import Verdict

T = TypeVar("T")

__version__ = "0.1.0"
USER_AGENT = f"keyservice-client/{__version__}"

# Connecting is quick or failing; a management call on a large account may read for a while.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# Shorter than uvicorn's keep-alive (5 s): a pooled connection is dropped before the server
# closes it, so that a request is not sent on a connection the server is closing.
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0
)

# Failures before the request left: safe to repeat whatever the request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after it may have reached the server: repeated for idempotent calls only.
_MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)

RATE_LIMIT_HEADERS = (
    "RateLimit-Policy",
    "RateLimit",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
)


@dataclass(frozen=True, slots=True)
class Retry:
    """When to try a request again.

    ``attempts`` counts the first: 3 means up to two retries. Retried: connection failures
    before the request was sent (any call), and, for idempotent calls only (reads, updates,
    deletes, revoke), timeouts and dropped connections after it was sent and the answers
    ``statuses`` (502, 503, 504). Delays double from ``backoff`` seconds, with jitter, up to
    ``max_delay``; a ``Retry-After`` within ``max_delay`` is waited for instead, and one beyond
    it is not waited for at all (the error is raised, with its ``retry_after``).
    ``Retry(attempts=1)`` never retries.
    """

    attempts: int = 3
    backoff: float = 0.25
    max_delay: float = 5.0
    statuses: frozenset[int] = field(default_factory=lambda: frozenset({502, 503, 504}))

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts counts the first try: at least 1")

    def _delay(self, attempt: int, retry_after: int | None = None) -> float | None:
        if attempt >= self.attempts:
            return None
        if retry_after is not None:
            return float(retry_after) if retry_after <= self.max_delay else None
        return min(self.max_delay, self.backoff * 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def after_error(self, operation: Operation, attempt: int, error: Exception) -> float | None:
        """The delay before the next attempt after ``error``, or None to give up."""
        if isinstance(error, _NOT_SENT) or (
            operation.idempotent and isinstance(error, _MAYBE_SENT)
        ):
            return self._delay(attempt)
        return None

    def after_status(
        self, operation: Operation, attempt: int, response: httpx.Response
    ) -> float | None:
        if not operation.idempotent or response.status_code not in self.statuses:
            return None
        return self._delay(attempt, parse_retry_after(response.headers.get("retry-after")))


def connection_error(operation: Operation, error: Exception) -> KeyserviceConnectionError:
    kind = (
        KeyserviceTimeout
        if isinstance(error, httpx.TimeoutException)
        else KeyserviceConnectionError
    )
    reason = str(error) or type(error).__name__
    return kind(f"{operation.method} {operation.path}: {type(error).__name__}: {reason}")


def request_headers(
    operation: Operation, key: str | None, account_id: str | None
) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if operation.authenticated and key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if operation.authenticated and account_id is not None:
        headers["X-Account-Id"] = account_id
    return headers


def _json(response: httpx.Response) -> object:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        raise UnexpectedResponseError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} answer is not JSON"
        ) from None


def raise_problem(response: httpx.Response) -> NoReturn:
    """Raise the ``ProblemError`` that an error answer stands for."""
    status = response.status_code
    body: object = None
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        pass
    problem: Mapping[str, Any] = body if isinstance(body, dict) else {}
    extensions = {
        k: v
        for k, v in problem.items()
        if k not in {"type", "title", "status", "detail", "instance"}
    }
    title = problem.get("title")
    detail = problem.get("detail")
    instance = problem.get("instance")
    raise problem_class(status)(
        type=str(problem.get("type") or "about:blank"),
        status=status,
        title=title if isinstance(title, str) else response.reason_phrase or f"HTTP {status}",
        detail=detail if isinstance(detail, str) else None,
        instance=instance if isinstance(instance, str) else None,
        extensions=extensions,
        headers=dict(response.headers),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def outcome(call: Call[T], response: httpx.Response) -> T:
    """The call's answer as its model, or the problem raised."""
    if not response.is_success:
        raise_problem(response)
    return call.parse(_json(response))


def verdict(response: httpx.Response) -> Verdict:
    """``/v1/verify``'s answer: a verdict on 200, and on keyservice's own 503 (``UNAVAILABLE``,
    a verdict too); any other answer is a problem, raised."""
    if response.status_code not in (200, 503):
        raise_problem(response)
    data = _json(response)
    if response.status_code == 503 and not (isinstance(data, dict) and "code" in data):
        raise_problem(response)  # a proxy's 503, not keyservice's verdict
    answer = models.parse(Verdict, data)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is None and answer.rate_limit is not None:
        retry_after = answer.rate_limit.retry_after
    passed_on = {
        name: response.headers[name] for name in RATE_LIMIT_HEADERS if name in response.headers
    }
    return Verdict(
        valid=answer.valid,
        code=answer.code,
        detail=answer.detail,
        key=answer.key,
        rate_limit=answer.rate_limit,
        retry_after=retry_after,
        rate_limit_headers=passed_on,
    )

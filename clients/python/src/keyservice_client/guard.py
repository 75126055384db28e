"""The guard of a downstream service: read the caller's key, ask keyservice, answer like it.

``KeyserviceGuard.check`` reads the key from ``Authorization: Bearer``, a bare
``Authorization`` or ``x-api-key`` (two different keys are refused), asks keyservice
(``/v1/verify``, or ``/v1/forward-auth``), and either returns the key's identity or raises
``KeyRefused``, whose answer is the problem keyservice itself would give:

==================================================  =====  =========================================
verdict                                             status headers
==================================================  =====  =========================================
no key; MALFORMED, NOT_FOUND, REVOKED, EXPIRED      401    ``WWW-Authenticate: Bearer``
INSUFFICIENT_SCOPE, ACCOUNT_FORBIDDEN               403
ACCOUNT_REQUIRED; two different keys                400
RATE_LIMITED, QUOTA_EXCEEDED; too many failures     429    ``RateLimit*``, ``X-RateLimit-*``,
                                                           ``Retry-After``, passed on
UNAVAILABLE; keyservice out of reach                503    ``Retry-After`` when keyservice gave one
==================================================  =====  =========================================

The FastAPI dependency is in ``keyservice_client.fastapi``, the middleware in
``keyservice_client.starlette``; both use this guard.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from keyservice_client import _operations as ops
from keyservice_client._http import RATE_LIMIT_HEADERS
from keyservice_client.cache import VerifyCache
from keyservice_client.client import AsyncKeyservice
from keyservice_client.errors import KeyserviceError, ProblemError
from keyservice_client.models import RateLimitState, Verdict, VerifiedKey

logger = logging.getLogger("keyservice_client")

PROBLEM_PREFIX = "urn:keyservice:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_KEY_LENGTH = 512  # /v1/verify's limit: anything longer is no key
SCOPE = re.compile(r"^[a-z0-9_:*-]{3,100}$")

# code: (status, problem slug, title), as keyservice answers them on its own API.
REFUSALS: dict[str, tuple[int, str, str]] = {
    "MALFORMED": (401, "malformed-key", "The API key is malformed"),
    "NOT_FOUND": (401, "unknown-key", "The API key is not valid"),
    "REVOKED": (401, "revoked-key", "The API key has been revoked"),
    "EXPIRED": (401, "expired-key", "The API key has expired"),
    "INSUFFICIENT_SCOPE": (403, "insufficient-scope", "The API key lacks a required scope"),
    "ACCOUNT_FORBIDDEN": (403, "account-forbidden", "This key does not reach that account"),
    "ACCOUNT_REQUIRED": (400, "account-required", "This key reaches several accounts: name one"),
    "RATE_LIMITED": (429, "rate-limited", "The key is over its rate limit"),
    "QUOTA_EXCEEDED": (429, "quota-exceeded", "The key has used its monthly quota"),
    "UNAVAILABLE": (503, "unavailable", "API keys cannot be verified right now"),
}
_UNKNOWN_REFUSAL = (401, "unauthorized", "Authentication required")
_UNAVAILABLE = REFUSALS["UNAVAILABLE"]
# Statuses of forward-auth whose problem is the client's to see, as it is.
_RELAYED = {400, 401, 403, 429, 503}


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who is calling: the key, the account it acts on, its application (or user), and its
    rights there (``scopes``, with ``resource:*`` as keyservice grants it).

    ``verified`` is everything ``/v1/verify`` said about the key (its name, expiry, the user's
    role); it is ``None`` through forward-auth, which says only the rest. ``rate_limit`` is
    where a limited key stands (``/v1/verify`` only)."""

    key_id: str
    account_id: str
    application_id: str | None
    user_id: str | None
    scopes: frozenset[str]
    environment: str
    kind: str
    rotated: bool = False
    verified: VerifiedKey | None = None
    rate_limit: RateLimitState | None = None


Dependency = Callable[[Request, Response], Awaitable[KeyIdentity]]


class KeyRefused(HTTPException):
    """The request is refused: ``problem`` is the RFC 9457 body to answer with, ``headers``
    its headers. A Starlette ``HTTPException``, so that an app without the guard's handler
    still answers with the right status and headers (with Starlette's body)."""

    def __init__(
        self,
        status: int,
        slug_or_type: str,
        title: str,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        type_uri = slug_or_type if ":" in slug_or_type else PROBLEM_PREFIX + slug_or_type
        self.problem: dict[str, Any] = {
            **(extensions or {}),
            "type": type_uri,
            "title": title,
            "status": status,
            "detail": detail or title,
        }
        super().__init__(status_code=status, detail=detail or title, headers=dict(headers or {}))

    def response(self, connection: HTTPConnection | None = None) -> Response:
        body = dict(self.problem)
        if connection is not None:
            body["instance"] = connection.url.path
        return Response(
            json.dumps(body),
            status_code=self.status_code,
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


async def problem_handler(connection: HTTPConnection, error: Exception) -> Response:
    """The app's exception handler for ``KeyRefused``: the problem+json answer."""
    if not isinstance(error, KeyRefused):
        raise error
    return error.response(connection)


def key_from_headers(headers: Headers) -> str | None:
    """The key, as keyservice reads it: ``Authorization: Bearer <key>``, ``Authorization:
    <key>`` or ``x-api-key``. Other schemes (``Basic ...``) are not keys; two different keys
    are refused (400)."""
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
        raise KeyRefused(
            400,
            "ambiguous-key",
            "More than one API key in the request",
            "The request carries two different API keys; send one",
        )
    return found.pop() if found else None


def _check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    for scope in scopes:
        if not SCOPE.match(scope):
            raise ValueError(f"{scope!r} is not a scope (resource:action)")
    return tuple(scopes)


def _endpoint(connection: HTTPConnection) -> str:
    """``METHOD /path`` for the key's usage: the route's template when it is known (``/contacts/
    {id}``, not one line per id), else the path."""
    route = connection.scope.get("route")
    path = getattr(route, "path", None) or connection.url.path
    method = connection.scope.get("method", "GET")
    return re.sub(r"[\x00-\x1f\x7f]", "", f"{method} {path}")[:200]


def _address(connection: HTTPConnection) -> str | None:
    host = connection.client.host if connection.client else None
    if host is None:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class KeyserviceGuard:
    """Guards a downstream service's routes with keyservice.

    ``keyservice`` is keyservice's URL, or an ``AsyncKeyservice`` of your own (then its key,
    cache, timeouts and retries apply). With a URL:

    - ``caller_key`` is this service's own keyservice key, holding ``keyservice:verify``. With
      it, ``/v1/verify`` knows who asks: the address of each request's client is sent as
      ``client_address``, so that keyservice throttles failed guesses per client of this service
      (without it, keyservice counts them all against this service's address, and ignores any
      ``client_address``), and only keys of the caller's account verify. Required when
      keyservice runs with ``KEYSERVICE_VERIFY_REQUIRES_AUTH=true``.
    - ``verify_cache`` keeps valid verdicts in this process for a few seconds: a key revoked
      meanwhile keeps passing here until its verdict expires (see ``VerifyCache``).

    ``via="forward-auth"`` asks ``/v1/forward-auth`` instead of ``/v1/verify``, with the
    request's key headers, and passes keyservice's problems on as they are; it knows less of the
    key (``KeyIdentity.verified`` is None), uses no cache, and keyservice sees the address of
    each request's client only if it trusts this service as a proxy
    (``--forwarded-allow-ips``).

    ``realm`` goes in ``WWW-Authenticate``.
    """

    def __init__(
        self,
        keyservice: AsyncKeyservice | str,
        *,
        caller_key: str | None = None,
        verify_cache: VerifyCache | None = None,
        via: Literal["verify", "forward-auth"] = "verify",
        realm: str = "api",
    ) -> None:
        if isinstance(keyservice, AsyncKeyservice):
            if caller_key is not None or verify_cache is not None:
                raise ValueError(
                    "caller_key and verify_cache configure the guard's own client: give them "
                    "to your AsyncKeyservice instead"
                )
            self.client = keyservice
            self._owns_client = False
        else:
            self.client = AsyncKeyservice(keyservice, caller_key, verify_cache=verify_cache)
            self._owns_client = True
        if via not in ("verify", "forward-auth"):
            raise ValueError("via is 'verify' or 'forward-auth'")
        self.via = via
        self.realm = realm

    def __repr__(self) -> str:
        return f"KeyserviceGuard({self.client.base_url!r}, via={self.via!r})"

    def install(self, app: Any) -> None:
        """Make this the guard of ``app`` (a FastAPI or Starlette app), for ``require_key``,
        and have the app answer refusals with problem+json."""
        app.state.keyservice_guard = self
        app.add_exception_handler(KeyRefused, problem_handler)

    def require(self, *scopes: str, cost: int | None = None) -> Dependency:
        """A FastAPI dependency that lets a request through only with a key holding every one
        of ``scopes``, and gives the route its ``KeyIdentity``. A limited key's rate-limit
        headers are added to the route's answer (when the route returns data, not a
        ``Response`` of its own)."""
        required = _check_scopes(scopes)

        async def dependency(request: Request, response: Response) -> KeyIdentity:
            identity, headers = await self.check(request, required, cost=cost)
            response.headers.update(headers)
            return identity

        return dependency

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def check(
        self,
        connection: HTTPConnection,
        scopes: Sequence[str] = (),
        *,
        cost: int | None = None,
        endpoint: str | None = None,
    ) -> tuple[KeyIdentity, dict[str, str]]:
        """The identity of the request's key, if it holds every one of ``scopes``, and the
        headers to add to the answer (a limited key's rate-limit headers); else ``KeyRefused``.
        ``endpoint`` (``"GET /contacts/{id}"``, by default the route's) is counted in the key's
        usage; ``cost`` spends more than one token of its rate limit (``/v1/verify`` only)."""
        key = key_from_headers(connection.headers)
        if key is None:
            raise self._refusal(401, "missing-key", "No API key in the request", error=None)
        account_id = connection.headers.get("x-account-id")
        if account_id is not None:
            try:
                account_id = str(uuid.UUID(account_id))
            except ValueError:
                raise KeyRefused(
                    403,
                    "account-forbidden",
                    REFUSALS["ACCOUNT_FORBIDDEN"][2],
                    "X-Account-Id is not an account id",
                ) from None
        endpoint = endpoint or _endpoint(connection)
        if len(key) > MAX_KEY_LENGTH:
            raise self._verdict_refusal("MALFORMED", None, {})
        if self.via == "forward-auth":
            return await self._forward_auth(connection, key, account_id, scopes, endpoint)
        try:
            verdict = await self.client.verify(
                key,
                scopes=scopes,
                endpoint=endpoint,
                cost=cost,
                account_id=account_id,
                client_address=_address(connection) if self.client.authenticated else None,
            )
        except ProblemError as error:
            raise self._problem_refusal(error) from None
        except KeyserviceError as error:
            raise self._unreachable(error) from None
        if not verdict.valid or verdict.key is None:
            raise self._verdict_refusal(verdict.code, verdict.detail, _passed_on(verdict))
        key_info = verdict.key
        identity = KeyIdentity(
            key_id=key_info.id,
            account_id=key_info.account_id,
            application_id=key_info.application_id,
            user_id=key_info.user_id,
            scopes=frozenset(key_info.scopes),
            environment=key_info.environment,
            kind=key_info.kind,
            rotated=key_info.rotated,
            verified=key_info,
            rate_limit=verdict.rate_limit,
        )
        return identity, dict(verdict.rate_limit_headers)

    async def _forward_auth(
        self,
        connection: HTTPConnection,
        key: str,
        account_id: str | None,
        scopes: Sequence[str],
        endpoint: str,
    ) -> tuple[KeyIdentity, dict[str, str]]:
        method, _, uri = endpoint.partition(" ")
        headers = {
            "Authorization": f"Bearer {key}",
            "X-Forwarded-Method": method,
            "X-Forwarded-Uri": uri,
        }
        if account_id is not None:
            headers["X-Account-Id"] = account_id
        if (address := _address(connection)) is not None:
            headers["X-Forwarded-For"] = address
        params = {"scopes": ",".join(scopes)} if scopes else {}
        try:
            response = await self.client._send(
                ops.FORWARD_AUTH, ops.FORWARD_AUTH.path, params=params, headers=headers
            )
        except KeyserviceError as error:
            raise self._unreachable(error) from None
        answer = response.headers
        passed_on = {name: answer[name] for name in RATE_LIMIT_HEADERS if name in answer}
        if response.status_code == 200 and "x-keyservice-key-id" in answer:
            identity = KeyIdentity(
                key_id=answer["x-keyservice-key-id"],
                account_id=answer.get("x-keyservice-account-id", ""),
                application_id=answer.get("x-keyservice-application-id"),
                user_id=answer.get("x-keyservice-user-id"),
                scopes=frozenset(answer.get("x-keyservice-scopes", "").split()),
                environment=answer.get("x-keyservice-environment", ""),
                kind=answer.get("x-keyservice-key-kind", ""),
                rotated=answer.get("x-keyservice-rotated") == "true",
            )
            return identity, passed_on
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if response.status_code not in _RELAYED or not isinstance(problem, dict):
            logger.warning("keyservice's forward-auth answered %s", response.status_code)
            raise self._refusal(*_UNAVAILABLE, headers=passed_on)
        if "www-authenticate" in answer:
            passed_on["WWW-Authenticate"] = self._challenge(error="invalid_token")
        extensions = {k: v for k, v in problem.items() if k != "instance"}
        raise KeyRefused(
            response.status_code,
            str(problem.get("type", "about:blank")),
            str(problem.get("title", "")),
            problem.get("detail"),
            headers=passed_on,
            extensions=extensions,
        )

    def _challenge(self, *, error: str | None) -> str:
        challenge = f'Bearer realm="{self.realm}"'
        return challenge + (f', error="{error}"' if error else "")

    def _refusal(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        error: str | None = "invalid_token",
    ) -> KeyRefused:
        headers = dict(headers or {})
        if status == 401:
            headers["WWW-Authenticate"] = self._challenge(error=error)
        return KeyRefused(status, slug, title, detail, headers)

    def _verdict_refusal(
        self, code: str, detail: str | None, headers: Mapping[str, str]
    ) -> KeyRefused:
        status, slug, title = REFUSALS.get(code, _UNKNOWN_REFUSAL)
        return self._refusal(status, slug, title, detail, headers=headers)

    def _problem_refusal(self, error: ProblemError) -> KeyRefused:
        """keyservice refused the /verify request itself."""
        if error.slug == "too-many-failures":
            # Too many failed guesses from the client's address (with a caller key; without
            # one, from this service's).
            retry = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
            return KeyRefused(429, error.type, error.title, error.detail, retry)
        # Anything else is about this service's own request or key, not the client's.
        return self._unreachable(error)

    def _unreachable(self, error: KeyserviceError) -> KeyRefused:
        """No verdict: keyservice is out of reach, or refuses this service itself (its
        ``caller_key``). Logged by kind, never with a key; the client gets a 503."""
        retry_after = getattr(error, "retry_after", None)
        logger.warning("keyservice gave no verdict: %s", error)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return self._refusal(*_UNAVAILABLE, headers=headers)


def _passed_on(verdict: Verdict) -> dict[str, str]:
    headers = dict(verdict.rate_limit_headers)
    if verdict.retry_after is not None and "Retry-After" not in headers:
        headers["Retry-After"] = str(verdict.retry_after)
    return headers

"""``POST /v1/verify`` for services, and forward-auth for proxies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.params import Body
from starlette.datastructures import Headers

from keyservice.errors import (
    AccountForbidden,
    BadRequest,
    DatabaseUnavailable,
    Forbidden,
    KeyServiceError,
    MissingKey,
    OverLimit,
    TooManyFailures,
    UnknownKey,
    ValidationFailed,
    responses,
)
from keyservice.ratelimit.limiter import Decision
from keyservice.usage.recorder import endpoint_template
from keyservice.verification.dependency import (
    AUTH_ERRORS,
    VerifierDep,
    client_address,
    key_from_headers,
)
from keyservice.verification.schemas import (
    RateLimitState,
    VerifiedKey,
    VerifyCode,
    VerifyRequest,
    VerifyResponse,
)
from keyservice.verification.verifier import Verified, Verifier

router = APIRouter(tags=["verification"])

VERIFY_SCOPE = "keyservice:verify"
MAX_FORWARD_SCOPES = 50
FORWARD_SCOPES_HEADER = "x-keyservice-required-scopes"


def verified_key(verified: Verified) -> VerifiedKey:
    principal = verified.principal
    record = principal.key
    return VerifiedKey(
        id=record.id,
        name=record.name,
        kind=record.kind,
        environment=record.environment,
        account_id=principal.account_id,
        application_id=record.application_id,
        user_id=record.user_id,
        role=principal.role,
        scopes=sorted(principal.scopes),
        expires_at=record.expires_at,
        rotated=verified.grace,
        rotated_secret_expires_at=record.previous_expires_at if verified.grace else None,
    )


@router.post(
    "/v1/verify",
    response_model=VerifyResponse,
    responses={
        **responses(BadRequest, MissingKey, Forbidden, ValidationFailed, TooManyFailures),
        503: {
            "model": VerifyResponse,
            "description": "No verdict can be had: the database is unreachable and the key is "
            "not one this instance verified before the outage. `code` is `UNAVAILABLE`; "
            "`Retry-After` says when to try again.",
        },
    },
)
async def verify(
    request: Request,
    verifier: VerifierDep,
    body: Annotated[VerifyRequest, Body()],
) -> Response:
    """Is this key good, for these scopes, on this account?

    Answers 200 whatever the verdict: `valid` and a machine-readable `code` (`VALID`,
    `MALFORMED`, `NOT_FOUND`, `REVOKED`, `EXPIRED`, `INSUFFICIENT_SCOPE`, `ACCOUNT_REQUIRED`,
    `ACCOUNT_FORBIDDEN`, `RATE_LIMITED`, `QUOTA_EXCEEDED`) and, when valid, the key's identity
    and rights on the account. For a key with a rate limit or quota, `rate_limit` and the
    `RateLimit-Policy`, `RateLimit`, `X-RateLimit-*` (and, when refused, `Retry-After`)
    headers say where it stands. `cost` spends more than one token; `endpoint` is counted in
    the key's usage.
    A malformed request is a 422 problem; a client address that keeps failing gets 429.
    While the database is unreachable, keys verified before the outage keep verifying for a
    while; any other answers 503 with `code` `UNAVAILABLE` and `Retry-After`.

    The key goes in `key`, or in this request's `Authorization`/`x-api-key` header. When the
    deployment sets `KEYSERVICE_VERIFY_REQUIRES_AUTH`, the caller sends its own key, holding
    `keyservice:verify`, in the header, the key to check in `key`, and only keys of the caller's
    account verify. Such a caller may name its own client's address in `client_address`, by
    which failed guesses are throttled; an anonymous caller's `client_address` is ignored.
    """
    result = await answer(verifier, body, request.headers, client_address(request))
    return result.response()


@dataclass(frozen=True, slots=True)
class Answer:
    # The VerifyResponse, as JSON.
    content: bytes
    headers: dict[str, str]
    # 200 whatever the verdict; 503 when no verdict can be had (the database is unreachable).
    status: int = 200

    def response(self) -> Response:
        return Response(
            self.content,
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers ``response()`` sends, encoded as ASGI sends them."""
        return [
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in self.headers.items()
            ),
            (b"content-length", b"%d" % len(self.content)),
            (b"content-type", b"application/json"),
        ]


async def answer(
    verifier: Verifier, body: VerifyRequest, headers: Headers, peer: str | None
) -> Answer:
    """POST /v1/verify's answer, for the route and for its fast path alike."""
    try:
        return await _answer(verifier, body, headers, peer)
    except DatabaseUnavailable as error:
        return Answer(_serialize(_refused(error)), dict(error.headers), status=error.status)


async def _answer(
    verifier: Verifier, body: VerifyRequest, headers: Headers, peer: str | None
) -> Answer:
    header_key = key_from_headers(headers)
    # Failed guesses are throttled per client address: the connection's (or, behind a trusted
    # proxy, the address it forwards), unless an authenticated caller names its own client's.
    # An anonymous caller's `client_address` counts for nothing: it could have any address
    # blocked, or name a new one for each guess and never be throttled.
    address = peer
    account_id = body.account_id
    authenticated = False
    if (body.key is not None and header_key is not None) or verifier.settings.verify_requires_auth:
        if header_key is None:
            raise MissingKey("Callers of /v1/verify must send their own key (keyservice:verify)")
        if body.key is None:
            raise ValidationFailed("Send the key to verify in the body's `key`")
        caller = await verifier.verify(
            header_key,
            scopes=[VERIFY_SCOPE],
            client_address=peer,
            endpoint="POST /v1/verify",
        )
        # An authenticated caller only learns about keys of its own account.
        if account_id is not None and account_id != caller.principal.account_id:
            return Answer(_serialize(_refused(UnknownKey())), {})
        account_id = caller.principal.account_id
        authenticated = True
        if body.client_address is not None:
            address = str(body.client_address)
        key = body.key
    elif body.key is not None:
        key = body.key
    elif header_key is not None:
        key = header_key
    else:
        raise ValidationFailed("No key to verify: send it in `key` or in a key header")
    try:
        verified = await verifier.verify(
            key,
            scopes=body.scopes,
            account_id=account_id,
            client_address=address,
            endpoint=body.endpoint,
            cost=body.cost,
            confined=authenticated,
        )
    except OverLimit as error:
        refusal = _refused(error, rate_limit_state(error.decision))
        return Answer(_serialize(refusal), dict(error.headers))
    except KeyServiceError as error:
        if error.code is None or isinstance(error, DatabaseUnavailable):
            raise
        return Answer(_serialize(_refused(error)), {})
    return Answer(valid_content(verified), verified.headers)


_serialize = VerifyResponse.__pydantic_serializer__.to_json
_serialize_key = VerifiedKey.__pydantic_serializer__.to_json
_VALID_HEAD = b'{"valid":true,"code":"VALID","detail":null,"key":'


def valid_content(verified: Verified) -> bytes:
    """``VerifyResponse(valid=True, code=VALID, key=..., rate_limit=...)`` as JSON, the same
    bytes, without validating and serializing the key's part on every request: a record never
    changes (a changed key is a new record), so its part is rendered once per account and
    secret (current or rotated) and kept with the record."""
    principal = verified.principal
    views = principal.key.views
    view = (principal.account_id, verified.grace)
    key = views.get(view)
    if key is None:
        key = views[view] = _serialize_key(verified_key(verified))
    decision = verified.decision
    rate_limit = _rate_limit_content(decision) if decision else b"null"
    return b'%s%s,"rate_limit":%s}' % (_VALID_HEAD, key, rate_limit)


_RATE_LIMIT_CONTENT = (
    b'{"limit":%s,"period_seconds":%s,"burst":%s,"remaining":%s,"reset_seconds":%s,'
    b'"retry_after":%s,"monthly_quota":%s,"quota_remaining":%s,"quota_reset_seconds":%s}'
)


def _rate_limit_content(decision: Decision) -> bytes:
    """``rate_limit_state(decision)`` as JSON: whole numbers or nulls, in the model's order."""
    rate = decision.limits.rate
    numbers = (
        *((rate.limit, rate.period_seconds, rate.burst) if rate else (None, None, None)),
        decision.remaining,
        decision.reset_seconds,
        decision.retry_after,
        decision.limits.monthly_quota,
        decision.quota_remaining,
        decision.quota_reset_seconds,
    )
    return _RATE_LIMIT_CONTENT % tuple(b"null" if n is None else b"%d" % n for n in numbers)


def _refused(error: KeyServiceError, state: RateLimitState | None = None) -> VerifyResponse:
    assert error.code is not None
    return VerifyResponse(
        valid=False, code=VerifyCode(error.code), detail=error.detail, rate_limit=state
    )


def rate_limit_state(decision: Decision) -> RateLimitState:
    rate = decision.limits.rate
    return RateLimitState(
        limit=rate.limit if rate else None,
        period_seconds=rate.period_seconds if rate else None,
        burst=rate.burst if rate else None,
        remaining=decision.remaining,
        reset_seconds=decision.reset_seconds,
        retry_after=decision.retry_after,
        monthly_quota=decision.limits.monthly_quota,
        quota_remaining=decision.quota_remaining,
        quota_reset_seconds=decision.quota_reset_seconds,
    )


FORWARD_AUTH_DOC = """Forward authentication for proxies (nginx `auth_request`, Traefik ForwardAuth,
Envoy `ext_authz`): call it with the client's original headers, on any method and any path below
`/v1/forward-auth/`.

Required scopes come from the query string (`?scopes=contacts:read,deals:write` or repeated
`scope=`) and from the `X-Keyservice-Required-Scopes` header; the client may name the account with
`X-Account-Id`. Answers 200 to allow, 401 for a missing or invalid key (with `WWW-Authenticate`),
403 for a missing scope, 429 for a client that keeps failing. On 200 the response carries, for
the proxy to pass upstream: `X-Keyservice-Key-Id`, `X-Keyservice-Account-Id`,
`X-Keyservice-Scopes` (space-separated), `X-Keyservice-Environment`, `X-Keyservice-Key-Kind`,
`X-Keyservice-Application-Id` or `X-Keyservice-User-Id`, and `X-Keyservice-Rotated: true` when
an old secret of a rotated key was used. The proxy must overwrite these headers upstream, never
pass a client's own."""


def _forward_scopes(request: Request) -> list[str]:
    raw = [*request.query_params.getlist("scope"), *request.query_params.getlist("scopes")]
    raw += request.headers.getlist(FORWARD_SCOPES_HEADER)
    scopes = sorted({s.strip() for value in raw for s in value.replace(" ", ",").split(",")} - {""})
    if len(scopes) > MAX_FORWARD_SCOPES:
        raise BadRequest(f"At most {MAX_FORWARD_SCOPES} required scopes")
    return scopes


async def forward_auth(request: Request, verifier: VerifierDep) -> Response:
    account_header = request.headers.get("x-account-id")
    account_id = None
    if account_header:
        try:
            account_id = uuid.UUID(account_header)
        except ValueError:
            raise AccountForbidden("X-Account-Id is not an account id") from None
    verified = await verifier.verify(
        key_from_headers(request.headers),
        scopes=_forward_scopes(request),
        account_id=account_id,
        client_address=client_address(request),
        endpoint=_forwarded_endpoint(request),
    )
    principal = verified.principal
    record = principal.key
    headers = {
        "X-Keyservice-Key-Id": str(record.id),
        "X-Keyservice-Account-Id": str(principal.account_id),
        "X-Keyservice-Scopes": " ".join(sorted(principal.scopes)),
        "X-Keyservice-Environment": record.environment.value,
        "X-Keyservice-Key-Kind": record.kind.value,
    }
    if record.application_id is not None:
        headers["X-Keyservice-Application-Id"] = str(record.application_id)
    if record.user_id is not None:
        headers["X-Keyservice-User-Id"] = str(record.user_id)
    if verified.grace:
        headers["X-Keyservice-Rotated"] = "true"
    return Response(status_code=200, headers=headers | verified.headers)


def _forwarded_endpoint(request: Request) -> str:
    """The client's request, as each proxy tells it: Traefik's X-Forwarded-*, nginx's
    X-Original-* (set them in the auth location), else Envoy's own method and path."""
    headers = request.headers
    method = headers.get("x-forwarded-method") or headers.get("x-original-method")
    uri = headers.get("x-forwarded-uri") or headers.get("x-original-uri")
    if uri is None:
        uri = "/" + request.path_params.get("path", "")
    return endpoint_template(method or request.method, uri)


FORWARD_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
FORWARD_RESPONSES = {
    200: {"description": "Allowed; the `X-Keyservice-*` headers describe the key."},
    **responses(*AUTH_ERRORS),
}
# One route per method, each documented: the client's method is whatever the proxy forwards
# (Envoy forwards the client's own), and one route of several methods would give them all one
# operation id.
for method in FORWARD_METHODS:
    router.add_api_route(
        "/v1/forward-auth",
        forward_auth,
        methods=[method],
        summary="Forward-auth" if method == "GET" else f"Forward-auth ({method})",
        description=FORWARD_AUTH_DOC
        if method == "GET"
        else "Forward-auth for a proxy that forwards the client's method: the same answers as "
        "`GET /v1/forward-auth`.",
        responses=FORWARD_RESPONSES,
        response_class=Response,
    )
router.add_api_route(
    "/v1/forward-auth/{path:path}",
    forward_auth,
    methods=FORWARD_METHODS,
    include_in_schema=False,
    response_class=Response,
)

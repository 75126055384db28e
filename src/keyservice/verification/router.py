"""``POST /v1/verify`` for services, and forward-auth for proxies."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.params import Body

from keyservice.errors import (
    AccountForbidden,
    BadRequest,
    Forbidden,
    responses,
)
from keyservice.observability import note_key
from keyservice.verification.answer import answer
from keyservice.verification.dependency import (
    AUTH_ERRORS,
    VerifierDep,
    client_address,
    counted,
    key_from_headers,
)
from keyservice.verification.endpoints import endpoint_template
from keyservice.verification.rendering import identity_headers
from keyservice.verification.schemas import VerifyRequest, VerifyResponse

router = APIRouter(tags=["verification"])

MAX_FORWARD_SCOPES = 50
FORWARD_SCOPES_HEADER = "x-keyservice-required-scopes"


@router.post(
    "/v1/verify",
    response_model=VerifyResponse,
    responses={
        # The caller's own key, when it authenticates, is refused like any route's.
        **responses(BadRequest, Forbidden, *AUTH_ERRORS),
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

    The key goes in `key`, or in this request's `Authorization`/`x-api-key` header. A request
    with a key in both authenticates its caller: the header's key must hold `keyservice:verify`,
    the key to check goes in `key`, and only keys of the caller's account verify (another
    account's answers `NOT_FOUND`). When the deployment sets `KEYSERVICE_VERIFY_REQUIRES_AUTH`,
    every caller must. Such a caller may name its own client's address in `client_address`, by
    which failed guesses are throttled; an anonymous caller's `client_address` is ignored.
    """
    result = await answer(verifier, body, request.headers, client_address(request))
    if result.key is not None:
        note_key(request.scope, *result.key)
    return result.response()


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


async def forward_auth(
    request: Request,
    verifier: VerifierDep,
    # Declared for the document; read, all together, by _forward_scopes.
    scopes: Annotated[
        list[str] | None,
        Query(description="Required scopes, comma-separated (`contacts:read,deals:write`)."),
    ] = None,
    scope: Annotated[
        list[str] | None, Query(description="A required scope; may be repeated.")
    ] = None,
    required_scopes: Annotated[
        str | None,
        Header(
            alias=FORWARD_SCOPES_HEADER,
            description="More required scopes, comma- or space-separated: it can only add to "
            "the query's.",
        ),
    ] = None,
) -> Response:
    account_header = request.headers.get("x-account-id")
    account_id = None
    if account_header:
        try:
            account_id = uuid.UUID(account_header)
        except ValueError:
            raise AccountForbidden("X-Account-Id is not an account id") from None
    verified = await counted(
        "forward_auth",
        request,
        verifier.verify(
            key_from_headers(request.headers),
            scopes=_forward_scopes(request),
            account_id=account_id,
            client_address=client_address(request),
            endpoint=_forwarded_endpoint(request),
        ),
    )
    return Response(status_code=200, headers=identity_headers(verified))


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

"""A verification's answer, rendered in one place: /verify's JSON (its fast path's bytes and the
documented model alike), the rate-limit headers of /verify, forward-auth and the management API,
and forward-auth's identity headers.

A limited key's state is read from the limiter's ``Decision`` once (``_numbers``); the headers,
the JSON bytes and the ``RateLimitState`` model are written from those numbers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from starlette.responses import Response

from keyservice.errors import KeyServiceError
from keyservice.ratelimit.limiter import Decision
from keyservice.verification.schemas import (
    RateLimitState,
    VerifiedKey,
    VerifyCode,
    VerifyResponse,
)
from keyservice.verification.service import Verified

_Numbers = tuple[int | None, ...]
# RateLimitState's fields, in its order: _numbers gives them in this order.
_FIELDS = tuple(RateLimitState.model_fields)


def _numbers(decision: Decision) -> _Numbers:
    rate = decision.limits.rate
    return (
        *((rate.limit, rate.period_seconds, rate.burst) if rate else (None, None, None)),
        decision.remaining,
        decision.reset_seconds,
        decision.retry_after,
        decision.limits.monthly_quota,
        decision.quota_remaining,
        decision.quota_reset_seconds,
    )


def rate_limit_state(decision: Decision) -> RateLimitState:
    return RateLimitState(**dict(zip(_FIELDS, _numbers(decision), strict=True)))


_RATE_LIMIT_CONTENT = b"{" + b",".join(b'"%s":%%s' % f.encode() for f in _FIELDS) + b"}"


def _rate_limit_content(decision: Decision) -> bytes:
    """``rate_limit_state(decision)`` as JSON: whole numbers or nulls, in the model's order."""
    return _RATE_LIMIT_CONTENT % tuple(
        b"null" if n is None else b"%d" % n for n in _numbers(decision)
    )


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` (IETF httpapi draft) and the ``X-RateLimit-*``
    fields for a limited key's answer."""
    limit, period, _, remaining, reset, retry_after, quota, quota_left, quota_reset = _numbers(
        decision
    )
    policies, states, legacy = [], [], {}
    if limit is not None:
        policies.append(f'"rate";q={limit};w={period}')
        states.append(f'"rate";r={remaining or 0};t={reset or 0}')
        legacy = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining or 0),
            "X-RateLimit-Reset": str(reset or 0),
        }
    if quota is not None:
        policies.append(f'"month";q={quota};w=2592000')
        states.append(f'"month";r={quota_left or 0};t={quota_reset or 0}')
        if not legacy:
            legacy = {
                "X-RateLimit-Limit": str(quota),
                "X-RateLimit-Remaining": str(quota_left or 0),
                "X-RateLimit-Reset": str(quota_reset or 0),
            }
    headers = {"RateLimit-Policy": ", ".join(policies), "RateLimit": ", ".join(states), **legacy}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


def verified_headers(verified: Verified) -> dict[str, str]:
    """The rate-limit headers of an allowed request (none for a key without limits)."""
    return rate_limit_headers(verified.decision) if verified.decision is not None else {}


def identity_headers(verified: Verified) -> dict[str, str]:
    """Forward-auth's description of an allowed key, for the proxy to pass upstream."""
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
    return headers | verified_headers(verified)


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


@dataclass(frozen=True, slots=True)
class Answer:
    """/verify's answer: the VerifyResponse as JSON, and its headers."""

    content: bytes
    headers: dict[str, str]
    # 200 whatever the verdict; 503 when no verdict can be had (the database is unreachable).
    status: int = 200
    code: str = "VALID"
    # The key found valid, and the account it acts on: for the request's line in the log.
    key: tuple[uuid.UUID, uuid.UUID] | None = None

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


_serialize = VerifyResponse.__pydantic_serializer__.to_json
_serialize_key = VerifiedKey.__pydantic_serializer__.to_json
_VALID_HEAD = b'{"valid":true,"code":"VALID","detail":null,"key":'


def valid(verified: Verified) -> Answer:
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
    found = (principal.key.id, principal.account_id)
    if decision is None:
        return Answer(b'%s%s,"rate_limit":null}' % (_VALID_HEAD, key), {}, key=found)
    content = b'%s%s,"rate_limit":%s}' % (_VALID_HEAD, key, _rate_limit_content(decision))
    return Answer(content, rate_limit_headers(decision), key=found)


def refused(error: KeyServiceError, decision: Decision | None = None) -> Answer:
    """A refusal: 200, with the key's rate-limit state and headers when its limits refused it.
    ``DatabaseUnavailable`` is no verdict: its own status and ``Retry-After``."""
    assert error.code is not None
    response = VerifyResponse(
        valid=False,
        code=VerifyCode(error.code),
        detail=error.detail,
        rate_limit=rate_limit_state(decision) if decision is not None else None,
    )
    if error.status >= 500:
        return Answer(_serialize(response), dict(error.headers), error.status, error.code)
    headers = rate_limit_headers(decision) if decision is not None else {}
    return Answer(_serialize(response), headers, code=error.code)

"""Scopes are ``resource:action`` strings; ``resource:*`` grants every scope under ``resource:``
(``deals:*`` grants ``deals:read``; ``keyservice:*`` grants every ``keyservice:...`` scope).

A deployment's catalogue is its product's scopes (settings) plus keyservice's own, which protect the
management API. A key's rights on an account are its scopes, within its application's permissions,
and, for a user's key, within what the user's role allows.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from keyservice.errors import InvalidScope
from keyservice.models import Role

KEYSERVICE_SCOPES: tuple[str, ...] = (
    "keyservice:account:read",
    "keyservice:account:write",
    "keyservice:members:read",
    "keyservice:members:write",
    "keyservice:applications:read",
    "keyservice:applications:write",
    "keyservice:keys:read",
    "keyservice:keys:write",
    "keyservice:audit:read",
    "keyservice:usage:read",
    "keyservice:events:publish",
    "keyservice:webhooks:read",
    "keyservice:webhooks:write",
    "keyservice:verify",
)
KEYSERVICE_NAMESPACE = "keyservice:"


def split(scope: str) -> tuple[str, str]:
    resource, _, action = scope.rpartition(":")
    return resource, action


def _grants(granted: str, required: str) -> bool:
    if granted == required:
        return True
    return granted.endswith(":*") and required.startswith(granted[:-1])


def covers(granted: Iterable[str], required: str) -> bool:
    """Whether ``granted`` includes ``required`` (itself possibly a wildcard)."""
    return any(_grants(g, required) for g in granted)


def intersect(a: Collection[str], b: Collection[str]) -> frozenset[str]:
    """The scopes granted by both ``a`` and ``b``, keeping the narrower form of each."""
    return frozenset(s for s in a if covers(b, s)) | frozenset(s for s in b if covers(a, s))


def role_scopes(role: Role, scopes: Iterable[str], catalogue: Iterable[str]) -> frozenset[str]:
    """``scopes`` as far as ``role`` allows them: a member's ``deals:*`` reads as ``deals:read``."""
    scopes = frozenset(scopes)
    if role.can_manage:
        return scopes
    readable = [s for s in catalogue if split(s)[1] == "read"]
    return frozenset(s for s in scopes if split(s)[1] == "read") | frozenset(
        s for s in readable if covers(scopes, s)
    )


def check_in_catalogue(scopes: Iterable[str], catalogue: Collection[str]) -> None:
    """Raise ``InvalidScope`` naming the first scope neither listed nor a wildcard of one."""
    for scope in scopes:
        if scope in catalogue or (
            scope.endswith(":*") and any(_grants(scope, s) for s in catalogue)
        ):
            continue
        raise InvalidScope(f"Unknown scope {scope!r}", scope=scope)


def check_within(scopes: Iterable[str], granted: Collection[str], *, what: str) -> None:
    for scope in scopes:
        if not covers(granted, scope):
            raise InvalidScope(f"Scope {scope!r} is not within {what}", scope=scope)


def check_grantable(held: Collection[str], scopes: Iterable[str]) -> None:
    """No escalation: keyservice's own scopes can only be handed on (to a key, or to an
    application's permissions) by a key that holds them."""
    own = [s for s in scopes if s.startswith(KEYSERVICE_NAMESPACE)]
    check_within(own, held, what="the calling key's own scopes")


def catalogue(product_scopes: Iterable[str]) -> tuple[str, ...]:
    """Every scope a key may hold in this deployment: the product's, then keyservice's own."""
    return (*product_scopes, *KEYSERVICE_SCOPES)

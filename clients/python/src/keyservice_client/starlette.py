"""The guard as ASGI middleware, for Starlette (or any ASGI) apps without FastAPI's dependencies.

```python
from starlette.applications import Starlette
from keyservice_client.starlette import KeyserviceGuard, KeyserviceMiddleware, key_identity

guard = KeyserviceGuard("http://127.0.0.1:8000")
app = Starlette(routes=[...])
app.add_middleware(KeyserviceMiddleware, guard=guard, scopes=["contacts:read"],
                   public_paths=["/healthz"])
# in a route: key_identity(request).account_id
```

Every HTTP request but those to ``public_paths`` needs a key holding every one of ``scopes``;
refusals are answered with problem+json (see ``keyservice_client.guard``) before the app sees
the request. Add CORS middleware after this one (outside it) so that preflight requests, which
carry no key, are answered first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyservice_client.guard import KeyIdentity, KeyRefused, KeyserviceGuard, _check_scopes

__all__ = ["KeyIdentity", "KeyRefused", "KeyserviceGuard", "KeyserviceMiddleware", "key_identity"]

STATE_KEY = "keyservice_key"


def key_identity(connection: HTTPConnection) -> KeyIdentity:
    """The identity the middleware put on the request."""
    identity = getattr(connection.state, STATE_KEY, None)
    if not isinstance(identity, KeyIdentity):
        raise LookupError("no key identity on this request: is KeyserviceMiddleware installed?")
    return identity


class KeyserviceMiddleware:
    """Refuses requests without a good key; puts the key's identity in ``request.state``
    (``key_identity(request)``) and a limited key's rate-limit headers on the answer.
    ``public_paths`` are let through without a key: a path ending in ``/`` covers everything
    below it, any other only itself."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: KeyserviceGuard,
        scopes: Sequence[str] = (),
        public_paths: Collection[str] = (),
        cost: int | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.scopes = _check_scopes(scopes)
        self.public_paths = frozenset(public_paths)
        self.cost = cost

    def _public(self, path: str) -> bool:
        return path in self.public_paths or any(
            path.startswith(prefix) for prefix in self.public_paths if prefix.endswith("/")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public(scope["path"]):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        try:
            identity, headers = await self.guard.check(connection, self.scopes, cost=self.cost)
        except KeyRefused as refusal:
            await refusal.response(connection)(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = identity

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and headers:
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""The FastAPI guard: ``Depends(require_key("contacts:read"))``.

```python
from fastapi import Depends, FastAPI
from keyservice_client.fastapi import KeyIdentity, KeyserviceGuard, require_key

app = FastAPI()
KeyserviceGuard("http://127.0.0.1:8000").install(app)

@app.get("/contacts")
async def contacts(key: KeyIdentity = Depends(require_key("contacts:read"))) -> dict[str, str]:
    return {"account": key.account_id}
```

``install`` makes the guard the app's, and makes refusals problem+json answers (see
``keyservice_client.guard`` for which). A guard can also be used without installing it as the
app's: ``Depends(guard.require("contacts:read"))``; for other Starlette apps, see
``keyservice_client.starlette``.
"""

from __future__ import annotations

from fastapi import Request, Response

from keyservice_client.guard import (
    Dependency,
    KeyIdentity,
    KeyRefused,
    KeyserviceGuard,
    _check_scopes,
)

__all__ = ["KeyIdentity", "KeyRefused", "KeyserviceGuard", "require_key"]


def require_key(*scopes: str, cost: int | None = None) -> Dependency:
    """``KeyserviceGuard.require``, with the guard installed on the app
    (``KeyserviceGuard(url).install(app)``): the route gets the key's ``KeyIdentity``."""
    required = _check_scopes(scopes)

    async def dependency(request: Request, response: Response) -> KeyIdentity:
        guard = getattr(request.app.state, "keyservice_guard", None)
        if not isinstance(guard, KeyserviceGuard):
            raise RuntimeError(
                "require_key needs a guard on the app: KeyserviceGuard(url).install(app)"
            )
        identity, headers = await guard.check(request, required, cost=cost)
        response.headers.update(headers)
        return identity

    return dependency

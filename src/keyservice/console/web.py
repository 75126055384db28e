"""What every console page shares: the signed-in visitor, CSRF, rendering, and security headers.

The console signs a user in with the same login as ``POST /v1/sessions``: the session key lives in
an ``HttpOnly``, ``SameSite=Strict``, path-scoped cookie, and every page verifies it with the same
verifier, scopes and roles as the API. A page asks for the scope its API route asks for; the
services below enforce the rest (isolation, limits, audit). No rule is written here a second time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BeforeValidator, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.accounts import service as accounts_service
from keyservice.config import Mode, Settings
from keyservice.db import SessionDep
from keyservice.errors import KeyServiceError, Unauthorized
from keyservice.observability import note_route
from keyservice.verification.dependency import client_address
from keyservice.verification.service import Principal
from keyservice.verification.verifier import Verifier

SESSION_COOKIE = "ks_session"
ACCOUNT_COOKIE = "ks_account"
# Before sign-in there is no session to bind a CSRF token to: the sign-in form's token is a
# random value in a cookie of its own, compared with the form's copy (double submit).
SIGN_IN_COOKIE = "ks_sign_in"
CSRF_FIELD = "csrf_token"

# No inline script or style, nothing from elsewhere, no framing, forms only to ourselves.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Pages show secrets once and per-account data: never kept by a browser or a proxy.
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.autoescape = True


def _local_time(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


templates.env.filters["iso"] = _local_time


def _none_if_blank(value: Any) -> Any:
    return None if value == "" else value


# A filter form's "any" option submits an empty value: for a query parameter, as good as absent.
Blank = BeforeValidator(_none_if_blank)


def prefix_of(request: Request) -> str:
    settings: Settings = request.app.state.settings
    return settings.console_prefix


def secure_cookies(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return settings.mode is not Mode.development


def csrf_token_for(session_secret: str) -> str:
    """Bound to the session: whoever can read the page has it, a cross-site form cannot."""
    digest = hmac.new(session_secret.encode(), b"keyservice console csrf", hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class AccountChoice:
    id: uuid.UUID
    name: str
    role: str


@dataclass(slots=True)
class Visitor:
    """A signed-in user on one of their accounts."""

    principal: Principal
    user_id: uuid.UUID
    email: str
    account: AccountChoice
    accounts: list[AccountChoice]
    csrf_token: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def account_id(self) -> uuid.UUID:
        return self.principal.account_id

    def can(self, scope: str) -> bool:
        """Whether to show the controls of ``scope``; the server checks again on submit."""
        return self.principal.allows(scope)


class SignInRequired(Exception):
    """No session, or one that no longer works: the visitor goes to the sign-in page."""

    def __init__(self, *, clear_cookie: bool = False) -> None:
        self.clear_cookie = clear_cookie


class CsrfFailed(KeyServiceError):
    status = 403
    slug = "csrf-failed"
    title = "The form has expired"

    def __init__(self) -> None:
        super().__init__("Reload the page and submit the form again")


class NoAccount(Exception):
    """The user belongs to no account (yet): there is nothing to show but that."""

    def __init__(self, email: str, csrf_token: str) -> None:
        self.email = email
        self.csrf_token = csrf_token


def _verifier(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    return prefix_of(request) + str(getattr(route, "path", ""))


async def name_route(request: Request) -> None:
    """The page's route template, prefix included, for the request's log line and metrics."""
    note_route(request.scope, _route_template(request))


def _endpoint(request: Request) -> str:
    return f"{request.method} {_route_template(request)}"


def requires(*scopes: str) -> Callable[..., Awaitable[Visitor]]:
    """A dependency: the signed-in visitor on their chosen account, holding ``scopes`` there.

    ``POST`` requests must also carry the page's CSRF token. Raises ``SignInRequired`` without
    a working session, and the API's own errors (``InsufficientRole``, ``RateLimited``, ...)
    otherwise, which the console renders as pages."""

    async def dependency(request: Request, session: SessionDep) -> Visitor:
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            raise SignInRequired()
        verifier = _verifier(request)
        address = client_address(request)
        try:
            user_principal = await verifier.verify_user(secret, client_address=address)
        except Unauthorized:
            raise SignInRequired(clear_cookie=True) from None
        csrf_token = csrf_token_for(secret)
        if request.method == "POST":
            await check_csrf(request, csrf_token)
        user, memberships = await accounts_service.user_accounts(session, user_principal.user_id)
        accounts = [
            AccountChoice(id=account.id, name=account.name, role=str(membership.role))
            for membership, account in memberships
            if membership.active
        ]
        if not accounts:
            raise NoAccount(user.email, csrf_token)
        chosen = request.cookies.get(ACCOUNT_COOKIE)
        account = next((a for a in accounts if str(a.id) == chosen), accounts[0])
        verified = await verifier.verify(
            secret,
            scopes=scopes,
            account_id=account.id,
            client_address=address,
            endpoint=_endpoint(request),
            # Console pages are not the product's API: they stay out of its usage graphs.
            metered=False,
        )
        visitor = Visitor(
            principal=verified.principal,
            user_id=user.id,
            email=user.email,
            account=account,
            accounts=accounts,
            csrf_token=csrf_token,
        )
        # An error page rendered later in the request still shows the visitor's navigation.
        request.state.console_visitor = visitor
        return visitor

    return dependency


async def check_csrf(request: Request, expected: str) -> None:
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not isinstance(submitted, str) or not hmac.compare_digest(
        submitted.encode(), expected.encode()
    ):
        raise CsrfFailed()


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(32)


# Rendering


def render(
    request: Request,
    template: str,
    visitor: Visitor | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page, or with ``HX-Request`` and a ``partial`` block name, that block alone."""
    response = templates.TemplateResponse(
        request,
        template,
        {"visitor": visitor, "prefix": prefix_of(request), **context},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 to a console page (``path`` relative to the console's prefix)."""
    response = RedirectResponse(prefix_of(request) + path, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def safe_next(request: Request, target: str | None) -> str:
    """Where to go after sign-in: a page of the console, never another site."""
    prefix = prefix_of(request)
    if target and target.startswith(prefix + "/") and not target.startswith("//"):
        if "\\" not in target and "//" not in target:
            return target[len(prefix) :]
    return "/"


def sign_in_url(request: Request) -> str:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return f"{prefix_of(request)}/sign-in?next={quote(target, safe='/')}"


@dataclass(frozen=True, slots=True)
class Problem:
    """An error as the API's problem details say it, for a form: a title, a detail, and the
    fields it concerns."""

    title: str
    detail: str
    status: int
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, error: KeyServiceError) -> Problem:
        fields: dict[str, str] = {}
        for item in error.extensions.get("errors", ()) or ():
            if isinstance(item, Mapping) and item.get("field"):
                fields[str(item["field"]).split(".")[-1]] = str(item.get("message", ""))
        return cls(title=error.title, detail=error.detail, status=error.status, fields=fields)

    @classmethod
    def of_validation(cls, error: ValidationError) -> Problem:
        fields: dict[str, str] = {}
        for item in error.errors():
            location = [str(part) for part in item["loc"] if not isinstance(part, int)]
            name = location[0] if location else "form"
            fields.setdefault(name, _humane(item))
        return cls(
            title="The form has errors",
            detail="Correct the fields marked below.",
            status=422,
            fields=fields,
        )


def _humane(item: Any) -> str:
    """pydantic's message, in the words a form uses."""
    kind = item.get("type")
    context = item.get("ctx") or {}
    if kind == "missing" or (kind == "string_too_short" and context.get("min_length") == 1):
        return "This field is required."
    if kind == "string_too_long":
        return f"At most {context.get('max_length')} characters."
    message = str(item["msg"]).removeprefix("Value error, ")
    return message[:1].upper() + message[1:]


async def undone(session: AsyncSession, response: Response) -> Response:
    """A failed write's page, rendered (it reads the objects as they were), and what the write
    had done rolled back: a failed form leaves nothing half-written."""
    await session.rollback()
    return response


def problem_page(
    request: Request,
    problem: Problem,
    *,
    headers: Mapping[str, str] | None = None,
    visitor: Visitor | None = None,
) -> Response:
    return render(
        request,
        "error.html",
        visitor,
        status_code=problem.status,
        headers=headers,
        problem=problem,
    )

"""Signing in and out, and choosing the account to work on."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from keyservice.accounts import sessions
from keyservice.accounts.schemas import LoginRequest
from keyservice.config import SettingsDep
from keyservice.console import web
from keyservice.db import SessionDep
from keyservice.errors import InvalidCredentials, KeyServiceError, Unauthorized
from keyservice.scopes import catalogue
from keyservice.verification.dependency import client_address

router = APIRouter()

Signed = Annotated[web.Visitor, Depends(web.requires())]


def _sign_in_page(
    request: Request,
    *,
    email: str = "",
    next_path: str = "/",
    problem: web.Problem | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    token = request.cookies.get(web.SIGN_IN_COOKIE) or web.new_sign_in_token()
    response = web.render(
        request,
        "sign_in.html",
        status_code=status_code,
        headers=headers,
        email=email,
        next_path=next_path,
        problem=problem,
        csrf_token=token,
    )
    response.set_cookie(
        web.SIGN_IN_COOKIE,
        token,
        path=web.prefix_of(request),
        httponly=True,
        samesite="strict",
        secure=web.secure_cookies(request),
    )
    return response


@router.get("", include_in_schema=False)
async def console_root(request: Request) -> Response:
    return web.redirect(request, "/")


@router.get("/")
async def home(request: Request, visitor: Signed) -> Response:
    return web.redirect(request, "/applications")


@router.get("/sign-in")
async def sign_in_form(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    next_path = web.safe_next(request, next)
    secret = request.cookies.get(web.SESSION_COOKIE)
    if secret:
        try:
            await request.app.state.verifier.verify_user(
                secret, client_address=client_address(request)
            )
        except Unauthorized:
            pass
        else:  # signed in already
            return web.redirect(request, next_path)
    return _sign_in_page(request, next_path=next_path)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    next_path = web.safe_next(request, web.prefix_of(request) + next)
    expected = request.cookies.get(web.SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise web.CsrfFailed()
    try:
        body = LoginRequest(email=email, password=password)
    except ValidationError as error:
        return _sign_in_page(
            request,
            email=email,
            next_path=next_path,
            problem=web.Problem.of_validation(error),
            status_code=422,
        )
    try:
        login = await sessions.login(
            session,
            email=str(body.email),
            password=body.password,
            client_address=client_address(request),
            settings=settings,
            catalogue=catalogue(settings.scopes),
        )
    except InvalidCredentials as error:
        # The failure counts although the sign-in fails (as on the API).
        await session.commit()
        return _sign_in_page(
            request,
            email=email,
            next_path=next_path,
            problem=web.Problem.of(error),
            status_code=error.status,
        )
    except KeyServiceError as error:  # too many failures: the same answer as the API's
        return await web.undone(
            session,
            _sign_in_page(
                request,
                email=email,
                next_path=next_path,
                problem=web.Problem.of(error),
                status_code=error.status,
                headers=error.headers,
            ),
        )
    response = web.redirect(request, next_path)
    response.set_cookie(
        web.SESSION_COOKIE,
        login.secret,
        max_age=settings.session_ttl_seconds,
        path=web.prefix_of(request),
        httponly=True,
        samesite="strict",
        secure=web.secure_cookies(request),
    )
    response.delete_cookie(web.SIGN_IN_COOKIE, path=web.prefix_of(request))
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SessionDep) -> Response:
    """Ends the session everywhere (its key is revoked), not only in this browser."""
    secret = request.cookies.get(web.SESSION_COOKIE)
    if secret:
        await web.check_csrf(request, web.csrf_token_for(secret))
        try:
            actor = await request.app.state.verifier.verify_user(
                secret, client_address=client_address(request)
            )
        except Unauthorized:
            pass  # already ended
        else:
            await sessions.end_session(session, actor)
    response = web.redirect(request, "/sign-in")
    response.delete_cookie(web.SESSION_COOKIE, path=web.prefix_of(request))
    response.delete_cookie(web.ACCOUNT_COOKIE, path=web.prefix_of(request))
    return response


@router.post("/account")
async def switch_account(
    request: Request,
    visitor: Signed,
    account_id: Annotated[uuid.UUID, Form()],
    back: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Work on another of the user's accounts; one the user is not in is refused."""
    if account_id not in {a.id for a in visitor.accounts}:
        problem = web.Problem(
            title="Not found", detail="You are not a member of that account.", status=404
        )
        return web.problem_page(request, problem, visitor=visitor)
    response = web.redirect(request, web.safe_next(request, web.prefix_of(request) + back))
    response.set_cookie(
        web.ACCOUNT_COOKIE,
        str(account_id),
        path=web.prefix_of(request),
        httponly=True,
        samesite="strict",
        secure=web.secure_cookies(request),
    )
    return response

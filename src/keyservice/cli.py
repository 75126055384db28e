"""The keyservice command: serve, migrate, bootstrap, openapi, issue-owner-key, set-password."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import getpass
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from sqlalchemy.exc import DBAPIError

from keyservice.config import Mode, Settings, SettingsError, get_settings
from keyservice.errors import KeyServiceError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

logger = logging.getLogger("keyservice")


def _print_first_key(
    secret: str,
    email: str,
    base_url: str,
    *,
    console: str | None = None,
    password: str | None = None,
) -> None:
    # Straight to the terminal, never through logging: log pipelines keep what they are given.
    sys.stdout.write(
        f"""
  keyservice: account created; owner {email}.
  Owner key (shown once, store it now):

      {secret}

  Try it:

      curl -s {base_url}/v1/account -H "Authorization: Bearer {secret}"

  API docs: {base_url}/docs

"""
    )
    if console is not None and password is not None:
        sys.stdout.write(
            f"""  Console: {base_url}{console}
  Sign in as {email} with the password (shown once; change it with
  `keyservice set-password --email {email}`):

      {password}

"""
        )
    sys.stdout.flush()


async def _bootstrap(
    settings: Settings, *, account_name: str, email: str, password: str | None, if_empty: bool
) -> str | None:
    from keyservice.accounts import service as accounts_service
    from keyservice.db import create_engine, create_sessionmaker

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            if if_empty and await accounts_service.has_accounts(session):
                return None
            _, _, secret = await accounts_service.bootstrap(
                session,
                account_name=account_name,
                owner_email=email,
                password=password,
                key_prefix=settings.key_prefix,
            )
            return secret
    finally:
        await engine.dispose()


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on the configured database, committed if it succeeds."""
    from keyservice.db import create_engine, create_sessionmaker

    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


def cmd_issue_owner_key(args: argparse.Namespace) -> None:
    from keyservice.accounts import service as accounts_service

    settings = get_settings()

    async def issue(session: AsyncSession) -> tuple[str, str]:
        key, secret = await accounts_service.issue_owner_key(
            session, email=args.email, account_id=args.account_id, key_prefix=settings.key_prefix
        )
        return str(key.id), secret

    key_id, secret = asyncio.run(_in_transaction(settings, issue))
    base_url = args.base_url
    # Straight to the terminal, never through logging, like the first key.
    sys.stdout.write(
        f"""
  keyservice: new owner key for {args.email.lower()} (shown once, store it now):

      {secret}

  It reaches every account of {args.email.lower()}, with their role there. To revoke a lost
  key, list the keys with this one and revoke the lost one by its id:

      curl -s {base_url}/v1/users/me/keys -H "Authorization: Bearer {secret}"
      curl -s -X POST {base_url}/v1/users/me/keys/<id>/revoke -H "Authorization: Bearer {secret}"

  (This key's id: {key_id}.)

"""
    )
    sys.stdout.flush()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # As `docker login --password-stdin`: the input, less the line break that ends it.
        password = sys.stdin.read()
        return password.removesuffix("\n").removesuffix("\r")
    password = getpass.getpass("New password: ")
    if getpass.getpass("New password again: ") != password:
        _refuse("the two passwords differ; nothing changed")
    return password


def cmd_set_password(args: argparse.Namespace) -> None:
    from keyservice.accounts import service as accounts_service

    settings = get_settings()

    async def find_user(session: AsyncSession) -> None:
        await accounts_service.user_by_email(session, args.email)

    # An unknown email is told before the password is asked for.
    asyncio.run(_in_transaction(settings, find_user))
    password = _read_password(args.password_stdin)

    async def set_password(session: AsyncSession) -> None:
        await accounts_service.set_password(session, email=args.email, password=password)

    asyncio.run(_in_transaction(settings, set_password))
    sys.stdout.write(f"keyservice: password set for {args.email.lower()}\n")


def _migrate(settings: Settings, revision: str) -> None:
    from keyservice import migrate

    asyncio.run(migrate.upgrade(settings, revision=revision))


def cmd_migrate(args: argparse.Namespace) -> None:
    _migrate(get_settings(), args.revision)


def cmd_bootstrap(args: argparse.Namespace) -> None:
    settings = get_settings()
    password = getpass.getpass("Owner password (empty for none): ") if args.password else None
    secret = asyncio.run(
        _bootstrap(
            settings,
            account_name=args.account_name,
            email=args.email,
            password=password or None,
            if_empty=args.if_empty,
        )
    )
    if secret is None:
        logger.info("accounts exist already; nothing done (--if-empty)")
        return
    _print_first_key(secret, args.email, args.base_url)


def _check_can_listen(host: str, port: int) -> None:
    """Bind the address as uvicorn will, and let it go: a busy port is told before anything
    starts, in words that say what to do, rather than as uvicorn's errno after startup."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _refuse(f"cannot listen on {host}: {exc.strerror}; check --host")
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                other = port + 1 if port < 65535 else port - 1
                choose = (
                    f"choose another port (make run PORT={other}, or keyservice serve "
                    f"--port {other})"
                )
                if exc.errno == errno.EADDRINUSE:
                    _refuse(f"port {port} is in use: stop the other server or {choose}")
                if exc.errno == errno.EACCES:
                    _refuse(f"port {port} needs privileges this user lacks: {choose}")
                _refuse(f"cannot listen on {host} port {port} ({exc.strerror}); check --host")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    settings = get_settings()
    _check_can_listen(args.host, args.port)
    if settings.is_sqlite and args.workers > 1:
        # Each worker has its own key cache, and SQLite has no NOTIFY to keep them in step: a
        # revoked key could go on verifying in another worker until the cache's TTL.
        sys.exit("keyservice: SQLite serves one worker; use PostgreSQL for more")
    if settings.mode is Mode.development:
        if settings.is_sqlite:
            _migrate(settings, "head")
        # A newcomer signs in to the console at once, with a password made for them.
        password = secrets.token_urlsafe(12) if settings.console_enabled else None
        secret = asyncio.run(
            _bootstrap(
                settings,
                account_name="My company",
                email="owner@example.com",
                password=password,
                if_empty=True,
            )
        )
        if secret is not None:
            _print_first_key(
                secret,
                "owner@example.com",
                f"http://{args.host}:{args.port}",
                console=settings.console_prefix,
                password=password,
            )
    from keyservice import logs

    with _metrics_directory(args.workers):
        uvicorn.run(
            "keyservice.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            proxy_headers=True,
            forwarded_allow_ips=args.forwarded_allow_ips,
            log_level=args.log_level,
            # keyservice writes each request's line itself, from a thread (keyservice.logs).
            access_log=False,
            log_config=logs.config(json_lines=settings.json_logs, level=args.log_level),
        )


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, each writes its metrics to files in one directory, which every
    worker's /metrics reads (prometheus-client's multi-process mode): a fresh one per run."""
    if workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="keyservice-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(directory, ignore_errors=True)


def cmd_openapi(args: argparse.Namespace) -> None:
    from keyservice.main import create_app

    document = json.dumps(create_app(get_settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(document)
    else:
        Path(args.output).write_text(document)


def cmd_encryption_key(_args: argparse.Namespace) -> None:
    from keyservice.secretbox import new_key

    sys.stdout.write(new_key() + "\n")


DESCRIPTION = "keyservice issues, verifies, rate-limits and meters API keys for your product's API."
EPILOG = "Run 'keyservice COMMAND --help' for a command's options."


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    # The summary in the command list, and as the description of the command's own --help.
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=summary[:1].upper() + summary[1:] + "."
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyservice", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = _command(commands, "serve", "serve the API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--forwarded-allow-ips",
        default=os.environ.get("KEYSERVICE_FORWARDED_ALLOW_IPS", "127.0.0.1"),
        help="proxies whose X-Forwarded-For is trusted for client addresses (default "
        "$KEYSERVICE_FORWARDED_ALLOW_IPS or 127.0.0.1); never '*' where clients reach the "
        "service directly: they could then pick the address that throttles are counted by",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    migrate = _command(commands, "migrate", "apply database migrations")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    bootstrap = _command(
        commands, "bootstrap", "create an account, its owner and an owner key (printed once)"
    )
    bootstrap.add_argument("--account-name", default="My company")
    bootstrap.add_argument("--email", default="owner@example.com")
    bootstrap.add_argument(
        "--password", action="store_true", help="prompt for the owner's password"
    )
    bootstrap.add_argument(
        "--if-empty", action="store_true", help="do nothing if any account exists"
    )
    bootstrap.add_argument("--base-url", default="http://127.0.0.1:8000")
    bootstrap.set_defaults(func=cmd_bootstrap)

    openapi = _command(commands, "openapi", "write the OpenAPI document")
    openapi.add_argument("--output", default="openapi/openapi.json")
    openapi.set_defaults(func=cmd_openapi)

    owner_key = _command(
        commands,
        "issue-owner-key",
        "issue a new owner key (printed once) to an account's owner who lost theirs",
    )
    owner_key.add_argument("--email", required=True, help="the owner's email")
    owner_key.add_argument(
        "--account-id",
        type=uuid.UUID,
        help="refuse unless the user owns this account (by default: any account)",
    )
    owner_key.add_argument("--base-url", default="http://127.0.0.1:8000")
    owner_key.set_defaults(func=cmd_issue_owner_key)

    set_password = _command(commands, "set-password", "set a user's password")
    set_password.add_argument("--email", required=True, help="the user's email")
    set_password.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of prompting for it twice",
    )
    set_password.set_defaults(func=cmd_set_password)

    encryption_key = _command(
        commands,
        "encryption-key",
        "print a new key for KEYSERVICE_ENCRYPTION_KEY (it encrypts webhook secrets at rest)",
    )
    encryption_key.set_defaults(func=cmd_encryption_key)

    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        args.func(args)
    except SettingsError as exc:
        # What is wrong with the environment, one line per variable: a traceback would bury it.
        _refuse(str(exc), status=2)
    except KeyServiceError as exc:
        # A command refused, for a reason its user can act on (an unknown email, say).
        _refuse(exc.detail[:1].lower() + exc.detail[1:])
    except (OSError, DBAPIError) as exc:
        # The database cannot be reached (or opened): say so in a line, not a traceback. The
        # reason names the host and port at most, never the URL (it may hold a password).
        _refuse(
            f"cannot use the database ({_reason(exc)}); check KEYSERVICE_DATABASE_URL and "
            "that the database server is running"
        )


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return lines[0][:200]


def _refuse(message: str, *, status: int = 1) -> NoReturn:
    sys.stderr.write("".join(f"keyservice: {line}\n" for line in message.splitlines()))
    sys.stderr.flush()
    sys.exit(status)

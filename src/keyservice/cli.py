"""The keyservice command: serve, migrate, bootstrap, openapi."""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import NoReturn

from keyservice.config import Mode, Settings, SettingsError, get_settings

logger = logging.getLogger("keyservice")


def _print_first_key(secret: str, email: str, base_url: str) -> None:
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
        secret = asyncio.run(
            _bootstrap(
                settings,
                account_name="My company",
                email="owner@example.com",
                password=None,
                if_empty=True,
            )
        )
        if secret is not None:
            _print_first_key(secret, "owner@example.com", f"http://{args.host}:{args.port}")
    uvicorn.run(
        "keyservice.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_level=args.log_level,
    )


def cmd_openapi(args: argparse.Namespace) -> None:
    from keyservice.main import create_app

    document = json.dumps(create_app(get_settings()).openapi(), indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(document)
    else:
        Path(args.output).write_text(document)


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


def _refuse(message: str, *, status: int = 1) -> NoReturn:
    sys.stderr.write("".join(f"keyservice: {line}\n" for line in message.splitlines()))
    sys.stderr.flush()
    sys.exit(status)

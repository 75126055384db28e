"""Where webhooks may be sent: the guard against server-side request forgery.

An endpoint's URL is chosen by whoever holds an admin key, and keyservice sends requests to it
from inside the deployment's network. Unguarded, such a URL could reach the database, a cloud's
metadata service (``169.254.169.254``) or an internal admin page. So, in production:

- a URL is https (http only to an allowed network), names no credentials, and every address its
  host resolves to is public: not loopback, private, link-local (metadata services), shared
  (``100.64.0.0/10``), multicast, reserved or unspecified, IPv4-mapped IPv6 included;
- it is checked when an endpoint is created or changed, and again before each delivery, after
  resolving its host: the request is then sent to the address that was checked (the name still
  used for ``Host`` and TLS), so a name that resolves elsewhere since (DNS rebinding) gains
  nothing.

``KEYSERVICE_WEBHOOK_ALLOWED_NETWORKS`` names networks that may be reached nonetheless (a
receiver inside the company network); development mode allows every address, so that a receiver
on the developer's machine works.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

import httpx

from keyservice.config import Mode, Settings

Address = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
MAX_URL_LENGTH = 2000


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The addresses ``host`` resolves to, through the system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Refused(Exception):
    """The URL may not be reached. ``kind``: ``invalid_url``, ``dns`` (its host does not
    resolve) or ``forbidden_address``; the message says why, for the integrator."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def is_public(address: Address) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class Target:
    """A checked destination: the URL, and the address to connect to (None: any, development)."""

    url: str
    host: str
    address: str | None


@functools.lru_cache(maxsize=4096)
def _parts(url: str) -> tuple[str, str, int]:
    """The URL's scheme, host and port; ``Refused`` if it is not one a webhook may have. The
    same few URLs are checked before every delivery: their parts are kept (not their
    addresses, which are resolved every time)."""
    try:
        httpx.URL(url)
        parts = urlsplit(url)
    except (httpx.InvalidURL, ValueError):
        raise Refused("invalid_url", "not a valid URL") from None
    if len(url) > MAX_URL_LENGTH:
        raise Refused("invalid_url", f"a URL has at most {MAX_URL_LENGTH} characters")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("invalid_url", "expected an absolute http or https URL")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise Refused("invalid_url", "the URL's host is not a valid host name") from None
    if parts.username is not None or parts.password is not None:
        raise Refused(
            "invalid_url", "a URL must not hold credentials: the signature proves the sender"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("invalid_url", "the URL's port is not valid") from None
    return parts.scheme, parts.hostname, port


@dataclass(frozen=True, slots=True)
class Policy:
    allow_all: bool
    allowed: tuple[IPv4Network | IPv6Network, ...] = ()
    resolver: Resolver = system_resolver

    @classmethod
    def of(cls, settings: Settings, *, resolver: Resolver = system_resolver) -> Policy:
        return cls(
            allow_all=settings.mode is Mode.development,
            allowed=tuple(ip_network(n, strict=False) for n in settings.webhook_allowed_networks),
            resolver=resolver,
        )

    def _in_allowed(self, address: Address) -> bool:
        return any(address in network for network in self.allowed)

    async def _addresses(self, host: str, port: int) -> list[Address]:
        try:
            return [ip_address(host)]
        except ValueError:
            pass
        try:
            resolved = await self.resolver(host, port)
        except (OSError, UnicodeError):
            raise Refused("dns", f"{host!r} does not resolve") from None
        if not resolved:
            raise Refused("dns", f"{host!r} does not resolve")
        return [ip_address(a.split("%", 1)[0]) for a in resolved]

    async def check(self, url: str) -> Target:
        """The URL's checked destination; ``Refused`` saying why it may not be reached."""
        scheme, host, port = _parts(url)
        if self.allow_all:
            return Target(url=url, host=host, address=None)
        addresses = await self._addresses(host, port)
        for address in addresses:
            if not is_public(address) and not self._in_allowed(address):
                raise Refused(
                    "forbidden_address",
                    f"{host!r} resolves to {address}, which is not a public address "
                    "(loopback, private, link-local and metadata addresses are refused)",
                )
        if scheme != "https" and not all(self._in_allowed(a) for a in addresses):
            raise Refused("invalid_url", "a webhook URL must use https")
        return Target(url=url, host=host, address=str(addresses[0]))

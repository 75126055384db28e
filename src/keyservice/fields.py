"""Constrained string types shared by the request schemas."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated

from pydantic import AfterValidator, Field, PlainValidator, StringConstraints, WithJsonSchema

# NUL is refused by PostgreSQL's text types (and would be stored silently by SQLite); other control
# characters in a name only ever hide something.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_no_control_characters),
]
Description = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2000),
    AfterValidator(_no_control_characters),
]
Scope = Annotated[str, StringConstraints(min_length=3, max_length=100, pattern=r"^[a-z0-9_:*-]+$")]
ScopeList = Annotated[list[Scope], Field(max_length=100)]


def _ip_address(value: object) -> IPv4Address | IPv6Address:
    # Strictly a string: ``ipaddress`` (and pydantic's IPvAnyAddress) would take ``true`` as 0.0.0.1
    # and an integer as the address it numbers.
    if not isinstance(value, str):
        raise ValueError("an IP address must be a string")
    return ip_address(value)


IPAddress = Annotated[
    IPv4Address | IPv6Address,
    PlainValidator(_ip_address),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]}
    ),
]

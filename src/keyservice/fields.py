"""Constrained string types shared by the request schemas."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

# NUL is refused by PostgreSQL's text types (and would be stored silently by SQLite); other control
# characters in a name only ever hide something. A lone surrogate (``"\\ud800"`` in JSON) is no
# character at all: it cannot be encoded as UTF-8, so no database can store it.
_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_SURROGATES = r"\ud800-\udfff"
_CONTROL = re.compile(f"[{_CONTROLS}{_SURROGATES}]")
# In a one-line text (an endpoint), tabs and line breaks too.
_CONTROL_ONE_LINE = re.compile(rf"[\x00-\x1f\x7f{_SURROGATES}]")
# What ``strip_whitespace`` strips: Unicode's White_Space.
_SPACES = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# The documented form of what the checks below accept, as sent: no control character, and for a
# name something besides white space.
NAME_PATTERN = rf"^[^{_CONTROLS}]*[^{_CONTROLS}{_SPACES}][^{_CONTROLS}]*$"
DESCRIPTION_PATTERN = rf"^[^{_CONTROLS}]*$"


def _as_sent(max_length: int) -> BeforeValidator:
    """Checks of the value as sent, before white space is stripped, so that the document's
    ``pattern`` and ``maxLength`` say exactly what is accepted."""

    def check(value: object) -> object:
        if isinstance(value, str):
            if _CONTROL.search(value):
                raise ValueError(
                    "control characters (such as NUL) and lone surrogates are not allowed"
                )
            if len(value) > max_length:
                raise ValueError(f"at most {max_length} characters")
        return value

    return BeforeValidator(check)


def _one_line(value: str) -> str:
    if _CONTROL_ONE_LINE.search(value):
        raise ValueError(
            "control characters (such as NUL or a line break) and lone surrogates are not allowed"
        )
    return value


def printable(value: str) -> str:
    """``value`` with what no database should store (control characters, lone surrogates)
    replaced by U+FFFD: for text that is counted, not refused (a proxied request's path)."""
    return _CONTROL_ONE_LINE.sub("\ufffd", value)


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    _as_sent(200),
    Field(json_schema_extra={"pattern": NAME_PATTERN}),
]
Description = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2000),
    _as_sent(2000),
    Field(json_schema_extra={"pattern": DESCRIPTION_PATTERN}),
]
MAX_ENDPOINT_LENGTH = 200
Endpoint = Annotated[
    str,
    StringConstraints(max_length=MAX_ENDPOINT_LENGTH),
    AfterValidator(_one_line),
    Field(json_schema_extra={"pattern": r"^[^\x00-\x1f\x7f]*$"}),
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

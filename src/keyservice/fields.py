"""Constrained string types shared by the request schemas."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

# NUL is refused by PostgreSQL's text types (and would be stored silently by SQLite); other control
# characters in a name only ever hide something. A lone surrogate (``"\\ud800"`` in JSON) is no
# character at all: it cannot be encoded as UTF-8, so no database can store it.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# In a one-line text (an endpoint), tabs and line breaks too.
_CONTROL_ONE_LINE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters (such as NUL) and lone surrogates are not allowed")
    return value


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
    AfterValidator(_no_control_characters),
]
Description = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2000),
    AfterValidator(_no_control_characters),
]
Endpoint = Annotated[str, StringConstraints(max_length=200), AfterValidator(_one_line)]
Scope = Annotated[str, StringConstraints(min_length=3, max_length=100, pattern=r"^[a-z0-9_:*-]+$")]
ScopeList = Annotated[list[Scope], Field(max_length=100)]

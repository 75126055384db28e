"""Every secret the suite creates, and every log line the suite writes: at the end of the run,
no line may hold a secret, or the start of a key (``no_secret_in_any_log`` in conftest.py)."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx

# Keys as keyservice makes them, and anything that starts like one.
KEY_LIKE = re.compile(r"[a-z][a-z0-9]{0,15}_(?:live|test)_[A-Za-z0-9]{6,}")
# How much of a key's start is already a leak (prefix, environment and a few random characters).
KEY_START = 14
SECRET_FIELDS = ("key", "password", "invitation_token", "secret", "initial_password")

CLIENT_LOGGERS = ("httpx", "httpcore")

keys: set[str] = set()
others: set[str] = set()


def remember(value: object) -> None:
    if not isinstance(value, str) or len(value) < 8:
        return
    if KEY_LIKE.fullmatch(value):
        keys.add(value)
    else:
        others.add(value)


def _collect(document: Any) -> None:
    if isinstance(document, dict):
        for name, value in document.items():
            if name in SECRET_FIELDS:
                remember(value)
            _collect(value)
    elif isinstance(document, list):
        for item in document:
            _collect(item)


async def on_request(request: httpx.Request) -> None:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            _collect(json.loads(request.content))
        except (ValueError, RecursionError, httpx.RequestNotRead):  # not JSON, or streamed
            pass


async def on_response(response: httpx.Response) -> None:
    await response.aread()
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            _collect(response.json())
        except (ValueError, RecursionError):
            pass


class SuiteLog(logging.Handler):
    """Keeps every record's text: message, fields and traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return  # the tests' own HTTP client, which logs the URLs it is asked to send
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        extras = " ".join(str(v) for k, v in record.__dict__.items() if k not in _PLAIN)
        self.lines.append(f"{text} {extras}")
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


_PLAIN = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def leaks(lines: list[str]) -> list[str]:
    """The lines that hold a secret the suite created, or a key's start."""
    starts = {key[:KEY_START] for key in keys}
    found = []
    pattern = re.compile("|".join(re.escape(s) for s in sorted(others))) if others else None
    for line in lines:
        if any(token[:KEY_START] in starts for token in KEY_LIKE.findall(line)):
            found.append(line)
        elif pattern is not None and pattern.search(line):
            found.append(line)
    return found

"""Logging: one line per request, and everything else, as JSON (production) or text
(development), written by a thread so that the event loop only hands records over.

``keyservice serve`` gives uvicorn this configuration (``config``) in place of its own, whose
access log wrote a line per request on the event loop and cost about a third of /v1/verify's
throughput. The request's line comes from ``keyservice.observability`` (logger
``keyservice.access``) with the request id, route template, status, latency, and the key and
account when known: never a key, a password, a token, a query string or a body.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

# What a record holds of its own, not a field of the line (uvicorn adds a coloured message).
# How long the writer lets lines gather between two writes: a line waits at most this long.
BATCH_SECONDS = 0.05
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# A request's line says these in its message already; the text form does not repeat them.
_IN_MESSAGE = frozenset({"method", "route", "status"})


# A request's line, as the request hands it over: when (time.time()), then ACCESS_FIELDS.
AccessLine = tuple[float, str, str, str, int, float, str | None, str | None, str | None]
ACCESS_FIELDS = (
    "request_id", "method", "route", "status", "duration_ms", "client", "key_id", "account_id"
)  # fmt: skip
ACCESS_LOGGER = "keyservice.access"


class _Seconds:
    """The current second in ISO 8601, formatted once a second rather than once a line."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's own fields."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds()

    def format_access(self, line: AccessLine) -> str:
        """A request's line, without a log record: the request's fields are ours (a checked
        request id, a route template, an address, ids), so only the route is escaped."""
        created, request_id, method, route, status, duration_ms, client, key, account = line
        return (
            f'{{"time":"{self._seconds(created)}","level":"info","logger":"{ACCESS_LOGGER}",'
            f'"message":{json.dumps(f"{method} {route} {status}")},"request_id":"{request_id}",'
            f'"method":"{method}","route":{json.dumps(route)},"status":{status},'
            f'"duration_ms":{duration_ms:.2f},"client":{_quoted(client)},'
            f'"key_id":{_quoted(key)},"account_id":{_quoted(account)}}}'
        )

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES and value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message key=value ...``, for a terminal."""

    def format_access(self, line: AccessLine) -> str:
        _, request_id, method, route, status, duration_ms, client, key, account = line
        text = (
            f"INFO {ACCESS_LOGGER}: {method} {route} {status} request_id={request_id} "
            f"duration_ms={duration_ms:.2f}"
        )
        for name, value in (("client", client), ("key_id", key), ("account_id", account)):
            if value is not None:
                text += f" {name}={value}"
        return text

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        extras = [
            f"{name}={value}"
            for name, value in record.__dict__.items()
            if name not in _RECORD_ATTRIBUTES and name not in _IN_MESSAGE and value is not None
        ]
        if extras:
            text += " " + " ".join(extras)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _quoted(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


class BackgroundHandler(logging.Handler):
    """Formats and writes records from a thread of its own: ``emit`` only queues them. Lines
    queued together are written together. A request's line comes as a tuple (``access``), not
    a log record: building a record costs more than the request's own work on /v1/verify."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self._queue: queue.SimpleQueue[logging.LogRecord | AccessLine | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._closing = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(record)

    def access(self, line: AccessLine) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(line)

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write, name="keyservice-log-writer", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)

    def _write(self) -> None:
        while True:
            record = self._queue.get()
            lines = []
            while record is not None:
                try:
                    if isinstance(record, tuple):
                        lines.append(self._format_access(record))
                    else:
                        lines.append(self.format(record))
                except Exception:
                    if isinstance(record, logging.LogRecord):
                        self.handleError(record)
                try:
                    record = self._queue.get_nowait()
                except queue.Empty:
                    break
            if lines:
                try:
                    self.stream.write("\n".join(lines) + "\n")
                    self.stream.flush()
                except Exception:  # a closed stream: nothing more can be said
                    pass
            if record is None:
                return
            # Let lines gather: a thread woken for every line costs every request a thread
            # switch, more than the line itself. Closing cuts the wait short.
            self._closing.wait(BATCH_SECONDS)

    def _format_access(self, line: AccessLine) -> str:
        formatter = self.formatter
        if isinstance(formatter, JsonFormatter | TextFormatter):
            return formatter.format_access(line)
        return " ".join(str(value) for value in line)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._closing.set()
            self._thread.join(timeout=5)
        super().close()


def access_handlers() -> list[BackgroundHandler]:
    """Where a request's line goes without a log record: the background handlers that the
    configuration put on the root logger, when the access logger is on and passes its records
    there. Empty otherwise (tests, another logging setup): the line is then a log record."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not access.isEnabledFor(logging.INFO) or access.handlers or not access.propagate:
        return []
    return [h for h in logging.getLogger().handlers if isinstance(h, BackgroundHandler)]


def config(*, json_lines: bool, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for keyservice and uvicorn, in every worker process."""
    formatter = "keyservice.logs.JsonFormatter" if json_lines else "keyservice.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {"()": "keyservice.logs.BackgroundHandler", "formatter": "default"}
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            # keyservice writes the request's line itself (keyservice.access).
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }

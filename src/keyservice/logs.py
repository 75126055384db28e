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
from datetime import UTC, datetime
from typing import Any, TextIO

# What a record holds of its own, not a field of the line (uvicorn adds a coloured message).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}
# A request's line says these in its message already; the text form does not repeat them.
_IN_MESSAGE = frozenset({"method", "route", "status"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's own fields."""

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


class BackgroundHandler(logging.Handler):
    """Formats and writes records from a thread of its own: ``emit`` only queues them. Lines
    queued together are written together."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self._queue: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(record)

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
                    lines.append(self.format(record))
                except Exception:
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

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)
        super().close()


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

"""One attempt at a delivery: the body and headers it sends, and how it sends them.

Used by the delivery worker and by the tester (``POST /v1/webhooks/endpoints/{id}/test``),
which shows an integrator exactly what was sent. Every request goes through the SSRF guard,
after resolving the endpoint's name, and then to the address that was checked.
"""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore

from keyservice.webhooks import signing
from keyservice.webhooks.ssrf import Policy, Refused
from keyservice.webhooks.transport import ERRORS, Sender

EXCERPT_BYTES = 4096
# A Retry-After beyond this is taken as this: the schedule's own longest wait.
MAX_RETRY_AFTER_SECONDS = 24 * 3600
USER_AGENT = "keyservice-webhooks"


@dataclass(frozen=True, slots=True)
class Request:
    """Exactly what an attempt sends (the tester shows it)."""

    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    excerpt: str
    error: str | None
    retry_after: float | None = None

    @property
    def success(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def body_of(event_type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    """A delivery's body, Standard Webhooks' shape: ``{"type", "timestamp", "data"}``."""
    timestamp = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    document = {"type": event_type, "timestamp": timestamp, "data": data}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def build_request(
    url: str, secrets_: Sequence[str], *, message_id: str, body: bytes, now: float | None = None
) -> Request:
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signing.headers(
            secrets_, message_id=message_id, timestamp=int(now or time.time()), body=body
        ),
    }
    return Request(url=url, headers=headers, body=body)


def _retry_after(status_code: int, headers: Mapping[str, str]) -> float | None:
    if status_code not in (429, 503):
        return None
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(min(int(value), MAX_RETRY_AFTER_SECONDS))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


def error_kind(exc: BaseException) -> str:
    """Why no response came: refused, timeout, tls, dns, or network (anything else)."""
    if isinstance(exc, httpcore.TimeoutException | TimeoutError):
        return "timeout"
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ssl.SSLError):
            return "tls"
        if isinstance(current, socket.gaierror):
            return "dns"
        if isinstance(current, ConnectionRefusedError):
            return "refused"
        current = current.__cause__ or current.__context__
    text = str(exc)
    if "SSL" in text or "certificate" in text:
        return "tls"
    if "refused" in text.lower():
        return "refused"
    return "network"


async def send(sender: Sender, policy: Policy, request: Request) -> Outcome:
    """One attempt: the URL checked against the SSRF policy after resolving it, then sent to the
    checked address (the host name kept for ``Host`` and TLS), redirects not followed."""
    began = time.monotonic()

    def elapsed() -> int:
        return round((time.monotonic() - began) * 1000)

    try:
        target = await policy.check(request.url)
    except Refused as refused:
        return Outcome(None, elapsed(), refused.message, refused.kind)
    try:
        answer = await sender.post(target, request.headers, request.body, limit=EXCERPT_BYTES)
    except ERRORS as exc:
        return Outcome(None, elapsed(), "", error_kind(exc))
    return Outcome(
        answer.status_code,
        elapsed(),
        answer.excerpt.decode(errors="replace"),
        None,
        _retry_after(answer.status_code, answer.headers),
    )

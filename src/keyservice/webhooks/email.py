"""Alerts by email: ``usage.threshold``, ``key.expiring`` and ``webhook.endpoint.disabled``,
sent from the same outbox as webhooks when ``KEYSERVICE_SMTP_URL`` is set.

The fan-out writes one email per event and recipient in the event's transaction (a unique
constraint makes a second one a no-op); the mailer, in every instance, claims due emails as the
delivery worker claims messages (``SKIP LOCKED`` and a lease), sends them with aiosmtplib,
retries failures on the webhook schedule, and marks each sent as soon as the server accepted
it, so that it is not sent twice. Its ``Message-ID`` is the email's id, for the rare repeat (an
instance that died between the server's acceptance and the mark).

Recipients: for a key's alerts, its application's developer email (a personal key's user);
for a disabled endpoint, the account's owners and admins. An account that asks for it
(``alert_emails_to_admins``) has every alert emailed to its owners and admins as well. Each
address gets one email per event, however many of these it is (compared without regard to case).
An email carries names, hints and ids, never a secret; an endpoint's URL is shown without its
query string.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage as MimeMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keyservice.availability import Availability
from keyservice.config import Settings
from keyservice.db import upsert
from keyservice.events import service as events
from keyservice.models import (
    Account,
    ApiKey,
    Application,
    EmailMessage,
    Event,
    Membership,
    MessageStatus,
    Role,
    User,
    utcnow,
)

logger = logging.getLogger(__name__)

ALERT_TYPES = frozenset({"usage.threshold", "key.expiring", "webhook.endpoint.disabled"})


class _Switch:
    # A process serves one deployment: the runtime says whether it sends email.
    enabled = False


def enable(enabled: bool) -> None:
    _Switch.enabled = enabled


@dataclass(frozen=True, slots=True)
class Smtp:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None

    @classmethod
    def parse(cls, url: str) -> Smtp:
        """``smtp://[user:password@]host[:port][?starttls=true]`` or ``smtps://...``."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("expected smtp://host[:port] or smtps://host[:port]")
        use_tls = parts.scheme == "smtps"
        query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
        start_tls = {"true": True, "false": False}.get(query.get("starttls", "").lower())
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


async def _key(session: AsyncSession, key_id: object) -> ApiKey | None:
    try:
        return await session.get(ApiKey, uuid.UUID(str(key_id)))
    except ValueError:
        return None


async def _key_recipients(session: AsyncSession, key: ApiKey | None) -> list[str]:
    if key is None:
        return []
    if key.application_id is not None:
        application = await session.get(Application, key.application_id)
        return [application.developer_email] if application is not None else []
    if key.user_id is not None:
        user = await session.get(User, key.user_id)
        return [user.email] if user is not None else []
    return []


async def _admins(session: AsyncSession, account_id: uuid.UUID) -> list[str]:
    return list(
        (
            await session.scalars(
                select(User.email)
                .join(Membership, Membership.user_id == User.id)
                .where(
                    Membership.account_id == account_id,
                    Membership.role.in_([Role.owner, Role.admin]),
                    Membership.accepted_at.is_not(None),
                )
                .order_by(User.email)
            )
        ).all()
    )


def _distinct(addresses: Sequence[str]) -> list[str]:
    """Each address once, in order; the same mailbox in another case is the same address."""
    seen: set[str] = set()
    distinct = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            distinct.append(address)
    return distinct


async def recipients(session: AsyncSession, event: Event, own: Sequence[str]) -> list[str]:
    """Who is emailed an alert event: its ``own`` recipients (``compose``'s), and the account's
    owners and admins when the account asks for it."""
    to_admins = await session.scalar(
        select(Account.alert_emails_to_admins).where(Account.id == event.account_id)
    )
    if to_admins:
        own = [*own, *await _admins(session, event.account_id)]
    return _distinct(own)


async def compose(session: AsyncSession, event: Event) -> tuple[list[str], str, str]:
    """The recipients (before the account's own choice to add its admins), subject and body of
    an alert event's email."""
    data: dict[str, Any] = event.data
    if event.type == "webhook.endpoint.disabled":
        why = (
            "it answered 410 Gone"
            if data.get("reason") == "gone"
            else f"every delivery to it has failed since {data.get('failing_since')}"
        )
        subject = "[keyservice] A webhook endpoint was disabled"
        body = (
            f"keyservice disabled the webhook endpoint {_safe_url(str(data.get('url')))} "
            f"(id {data.get('endpoint_id')}): {why}.\n\n"
            "Events for it are kept until it is enabled again "
            f"(POST /v1/webhooks/endpoints/{data.get('endpoint_id')}/enable).\n"
        )
        return await _admins(session, event.account_id), subject, body
    key = await _key(session, data.get("key_id"))
    name = key.name if key is not None else str(data.get("key_id"))
    hint = f" ({key.hint})" if key is not None else ""
    if event.type == "key.expiring":
        days = round(int(data.get("lead_seconds", 0)) / 86400)
        subject = f"[keyservice] The key “{name}” expires in {days} day{'s' * (days != 1)}"
        body = (
            f"The API key “{name}”{hint} expires at {data.get('expires_at')}. Rotate it, or "
            "issue a new one, before then: it stops working at that time.\n"
        )
    elif data.get("kind") == "monthly_quota":
        subject = f"[keyservice] The key “{name}” has used {data.get('percent')}% of its quota"
        body = (
            f"The API key “{name}”{hint} has made {data.get('used')} requests of its monthly "
            f"quota of {data.get('quota')} in {data.get('month')}.\n"
        )
    else:
        subject = f"[keyservice] The key “{name}” keeps being rate limited"
        body = (
            f"The API key “{name}”{hint} was refused {data.get('rate_limited')} times by its "
            f"limits in the hour from {data.get('hour')}.\n"
        )
    return await _key_recipients(session, key), subject, body


async def fan_out(session: AsyncSession, recorded: Sequence[events.Recorded]) -> None:
    if not _Switch.enabled:
        return
    alerts = [e.id for e in recorded if e.type in ALERT_TYPES]
    if not alerts:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for event in (await session.scalars(select(Event).where(Event.id.in_(alerts)))).all():
        own, subject, body = await compose(session, event)
        rows.extend(
            {
                "id": uuid.uuid4(),
                "account_id": event.account_id,
                "event_id": event.id,
                "recipient": recipient,
                "subject": subject,
                "body": body,
                "status": MessageStatus.pending,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for recipient in await recipients(session, event, own)
        )
    if rows:
        await session.execute(
            upsert(session, EmailMessage.__table__)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["event_id", "recipient"])
        )


events.subscribe(fan_out)


class Mailer:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        availability: Availability | None = None,
        clock: Callable[[], datetime] = utcnow,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        assert settings.smtp_url is not None
        self.smtp = Smtp.parse(settings.smtp_url.get_secret_value())
        self.sender = settings.smtp_from
        self.sessionmaker = sessionmaker
        self.availability = availability
        self.clock = clock
        self.jitter = jitter
        self.schedule = settings.webhook_retry_schedule
        self.lease = timedelta(seconds=settings.webhook_claim_lease_seconds)
        self.poll_seconds = max(settings.webhook_poll_seconds, 5.0)
        self.timeout = settings.webhook_timeout_seconds
        self.worker_id = uuid.uuid4()
        self._task: asyncio.Task[None] | None = None
        self._failing_logged = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyservice-mailer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if self.availability is None or not self.availability.down:
                try:
                    while await self.run_once():
                        pass
                except Exception as exc:
                    if self.availability is None or not self.availability.failed(exc):
                        if not self._failing_logged:
                            logger.exception("sending alert emails failed; retrying")
                            self._failing_logged = True
                else:
                    self._failing_logged = False
            await asyncio.sleep(self.poll_seconds)

    async def run_once(self) -> int:
        now = self.clock()
        due = (
            select(EmailMessage.id)
            .where(
                EmailMessage.status == MessageStatus.pending, EmailMessage.next_attempt_at <= now
            )
            .order_by(EmailMessage.next_attempt_at)
            .limit(20)
            .with_for_update(skip_locked=True)
        )
        async with self.sessionmaker() as session:
            claimed = (
                await session.scalars(
                    update(EmailMessage)
                    .where(EmailMessage.id.in_(due.scalar_subquery()))
                    .values(next_attempt_at=now + self.lease, claimed_by=self.worker_id)
                    .returning(EmailMessage)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            await session.commit()
        for email in claimed:
            error = await self._send(email)
            await self._settle(email, error)
        return len(claimed)

    async def _send(self, email: EmailMessage) -> str | None:
        message = MimeMessage()
        message["From"] = self.sender
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Message-ID"] = f"<{email.id}@keyservice>"
        message.set_content(email.body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.smtp.hostname,
                port=self.smtp.port,
                username=self.smtp.username,
                password=self.smtp.password,
                use_tls=self.smtp.use_tls,
                start_tls=self.smtp.start_tls,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return type(exc).__name__
        return None

    async def _settle(self, email: EmailMessage, error: str | None) -> None:
        now = self.clock()
        attempts = email.attempts + 1
        if error is None:
            values: dict[str, Any] = {"status": MessageStatus.delivered, "finished_at": now}
            values["next_attempt_at"] = None
        elif attempts > len(self.schedule):
            values = {"status": MessageStatus.failed, "finished_at": now, "next_attempt_at": None}
        else:
            delay = self.schedule[attempts - 1] * (1 + 0.1 * self.jitter())
            values = {"next_attempt_at": now + timedelta(seconds=delay)}
        async with self.sessionmaker() as session:
            await session.execute(
                update(EmailMessage)
                .where(EmailMessage.id == email.id, EmailMessage.claimed_by == self.worker_id)
                .values(attempts=attempts, claimed_by=None, last_error=error, **values)
                .execution_options(synchronize_session=False)
            )
            await session.commit()

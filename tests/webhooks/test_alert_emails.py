"""Alerts by email: sent from the outbox to a real SMTP server (aiosmtpd, in process), to the
application's developer or the account's admins, retried while the server is down, never sent
twice once accepted, and with no secret in them."""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage as MimeMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conftest import Clock
from factories import create_application, create_key, create_tenant
from keyservice.config import Settings
from keyservice.events import catalogue
from keyservice.events import service as events
from keyservice.models import EmailMessage, utcnow
from keyservice.scheduler import Scheduler
from keyservice.webhooks import email as alert_email
from keyservice.webhooks.delivery import Delivery
from receivers import Answer, Receiver, endpoint_for
from servers import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], MimeMessage]] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, MimeMessage)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def texts(self) -> list[str]:
        return [str(m) for _, m in self.messages]


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def inbox(smtp_port: int) -> Iterator[Inbox]:
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture
def mail_settings(settings: Settings, smtp_port: int) -> Iterator[Settings]:
    configured = settings.model_copy(
        update={"smtp_url": SecretStr(f"smtp://127.0.0.1:{smtp_port}")}
    )
    alert_email.enable(True)
    yield configured
    alert_email.enable(False)


@pytest.fixture
def mailer(
    sessionmaker: async_sessionmaker[AsyncSession], mail_settings: Settings, clock: Clock
) -> alert_email.Mailer:
    return alert_email.Mailer(sessionmaker, mail_settings, clock=clock, jitter=lambda: 0.0)


async def test_a_disabled_endpoint_is_emailed_to_the_accounts_admins_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    inbox: Inbox,
    mailer: alert_email.Mailer,
) -> None:
    tenant = await create_tenant(session)
    created = await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(410)
    await create_application(client, tenant)
    await delivery.run_once()
    assert await mailer.run_once() == 1
    assert await mailer.run_once() == 0
    [(recipients, message)] = inbox.messages
    assert recipients == [tenant.owner.email]
    assert message["Subject"] == "[keyservice] A webhook endpoint was disabled"
    assert created["id"] in message.get_content()
    assert "410" in message.get_content()
    assert created["secret"] not in str(message)


async def test_an_expiring_application_key_is_emailed_to_its_developer(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    mail_settings: Settings,
    clock: Clock,
    inbox: Inbox,
    mailer: alert_email.Mailer,
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant, developer_email="dev@partner.example")
    expires_at = utcnow() + timedelta(hours=20)
    key = await create_key(client, tenant, application["id"], expires_at=expires_at.isoformat())
    await Scheduler(sessionmaker, mail_settings, clock=clock).run_once()
    assert await mailer.run_once() == 1
    [(recipients, message)] = inbox.messages
    assert recipients == ["dev@partner.example"]
    assert message["Subject"] == "[keyservice] The key “Production Integration” expires in 1 day"
    assert key["hint"] in message.get_content()
    assert key["key"] not in str(message)
    assert key["key"][:14] not in str(message)


async def test_a_usage_alert_is_emailed_and_retried_while_the_server_is_down(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    mail_settings: Settings,
    clock: Clock,
    smtp_port: int,
) -> None:
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    key = await create_key(client, tenant, application["id"])
    await events.record(
        session,
        account_id=tenant.account.id,
        key_id=uuid.UUID(key["id"]),
        data=catalogue.UsageThresholdData.model_validate(
            {
                "key_id": key["id"],
                "kind": "monthly_quota",
                "percent": 80,
                "quota": 1000,
                "used": 800,
                "month": "2026-11",
            }
        ),
    )
    await session.commit()
    mailer = alert_email.Mailer(sessionmaker, mail_settings, clock=clock, jitter=lambda: 0.0)
    assert await mailer.run_once() == 1  # nothing listens on the port yet
    [pending] = (await session.scalars(select(EmailMessage))).all()
    await session.refresh(pending)
    assert (pending.status, pending.attempts, pending.last_error) == (
        "pending",
        1,
        "SMTPConnectError",
    )
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        assert await mailer.run_once() == 0  # not due before the schedule says
        clock.advance(5)
        assert await mailer.run_once() == 1
        clock.advance(3600)
        assert await mailer.run_once() == 0
    finally:
        controller.stop()
    [(recipients, message)] = handler.messages
    assert recipients == ["dev@partner.example"]
    assert "80%" in message["Subject"]
    assert "800 requests" in message.get_content()


async def test_nothing_is_written_for_email_without_smtp(
    client: httpx.AsyncClient, session: AsyncSession, delivery: Delivery, receiver: Receiver
) -> None:
    tenant = await create_tenant(session)
    await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(410)
    await create_application(client, tenant)
    await delivery.run_once()
    assert (await session.scalars(select(EmailMessage))).all() == []

"""Alerts by email: sent from the outbox to a real SMTP server (aiosmtpd, in process), to the
application's developer or the account's admins (and, when the account asks for it, to its
owners and admins as well, once each), retried while the server is down, never sent twice once
accepted, and with no secret in them."""

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
from factories import (
    Tenant,
    create_application,
    create_key,
    create_personal_key,
    create_tenant,
    create_user,
)
from keyservice.config import Settings
from keyservice.events import catalogue
from keyservice.events import service as events
from keyservice.models import EmailMessage, Membership, Role, utcnow
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


# --- An account's choice to email its owners and admins too ------------------------------------


class PickyInbox(Inbox):
    """An inbox whose server refuses some recipients, for now."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    async def handle_RCPT(
        self, _server: Any, _session: Any, envelope: Any, address: str, _options: Any
    ) -> str:
        if address in self.refused:
            return "450 Mailbox unavailable, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def _usage_alert(session: AsyncSession, tenant: Tenant, key_id: str) -> None:
    await events.record(
        session,
        account_id=tenant.account.id,
        key_id=uuid.UUID(key_id),
        data=catalogue.UsageThresholdData.model_validate(
            {
                "key_id": key_id,
                "kind": "rate_limited",
                "hour": "2026-11-21T09:00:00Z",
                "rate_limited": 120,
                "threshold": 100,
            }
        ),
    )
    await session.commit()


async def _staff(session: AsyncSession, tenant: Tenant) -> dict[str, str]:
    """An admin, a member and an admin still invited, besides the owner: their addresses."""
    admin = await create_user(session, accounts={tenant.account.id: Role.admin})
    member = await create_user(session, accounts={tenant.account.id: Role.member})
    invited = await create_user(session, accounts={})
    session.add(Membership(account_id=tenant.account.id, user_id=invited.id, role=Role.admin))
    await session.commit()
    return {
        "owner": tenant.owner.email,
        "admin": admin.email,
        "member": member.email,
        "invited": invited.email,
    }


def _sent(inbox: Inbox) -> list[str]:
    return sorted(address for recipients, _ in inbox.messages for address in recipients)


async def test_alerts_go_to_the_developer_only_unless_the_account_asks_for_its_admins(
    client: httpx.AsyncClient,
    session: AsyncSession,
    inbox: Inbox,
    mailer: alert_email.Mailer,
) -> None:
    tenant = await create_tenant(session)
    staff = await _staff(session, tenant)
    application = await create_application(client, tenant, developer_email="dev@partner.example")
    key = await create_key(client, tenant, application["id"])
    await _usage_alert(session, tenant, key["id"])
    assert await mailer.run_once() == 1
    assert _sent(inbox) == ["dev@partner.example"]

    response = await client.patch(
        "/v1/account", json={"alert_emails_to_admins": True}, headers=tenant.headers
    )
    assert response.json()["alert_emails_to_admins"] is True
    inbox.messages.clear()
    await _usage_alert(session, tenant, key["id"])
    assert await mailer.run_once() == 3
    assert await mailer.run_once() == 0
    # Active owners and admins: not members, nor an admin who has not accepted the invitation.
    assert _sent(inbox) == sorted(["dev@partner.example", staff["owner"], staff["admin"]])
    for recipients, message in inbox.messages:
        assert message["To"] == recipients[0]
        assert "keeps being rate limited" in message["Subject"]
        assert key["key"] not in str(message)
        assert key["key"][:14] not in str(message)
        assert tenant.owner_key not in str(message)


async def test_each_address_is_emailed_once_and_retried_alone(
    client: httpx.AsyncClient,
    session: AsyncSession,
    mail_settings: Settings,
    smtp_port: int,
    clock: Clock,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    tenant = await create_tenant(session)
    staff = await _staff(session, tenant)
    # The application's developer is an admin too, under another case.
    application = await create_application(
        client, tenant, developer_email=staff["admin"].capitalize()
    )
    key = await create_key(client, tenant, application["id"])
    await client.patch("/v1/account", json={"alert_emails_to_admins": True}, headers=tenant.headers)
    await _usage_alert(session, tenant, key["id"])

    handler = PickyInbox(refused={staff["owner"]})
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        mailer = alert_email.Mailer(sessionmaker, mail_settings, clock=clock, jitter=lambda: 0.0)
        assert await mailer.run_once() == 2
        assert _sent(handler) == [staff["admin"].capitalize()]
        handler.refused.clear()
        assert await mailer.run_once() == 0  # the refused one waits for its retry
        clock.advance(5)
        assert await mailer.run_once() == 1
        clock.advance(3600)
        assert await mailer.run_once() == 0
    finally:
        controller.stop()
    assert _sent(handler) == sorted([staff["admin"].capitalize(), staff["owner"]])
    rows = (await session.scalars(select(EmailMessage))).all()
    for row in rows:
        await session.refresh(row)
    assert sorted((r.recipient, r.status, r.attempts) for r in rows) == sorted(
        [(staff["admin"].capitalize(), "delivered", 1), (staff["owner"], "delivered", 2)]
    )


async def test_a_personal_keys_alert_goes_to_its_user_and_the_admins_who_asked(
    client: httpx.AsyncClient,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
    mail_settings: Settings,
    clock: Clock,
    inbox: Inbox,
    mailer: alert_email.Mailer,
) -> None:
    asking, quiet = await create_tenant(session, "Asking"), await create_tenant(session, "Quiet")
    await client.patch("/v1/account", json={"alert_emails_to_admins": True}, headers=asking.headers)
    user = await create_user(
        session, accounts={asking.account.id: Role.member, quiet.account.id: Role.member}
    )
    expires_at = utcnow() + timedelta(hours=20)
    secret = await create_personal_key(
        session, user, scopes=["contacts:read"], expires_at=expires_at
    )
    # Recorded in each account the user has joined: emailed to the user from each, and to the
    # admins of the account that asked for it.
    await Scheduler(sessionmaker, mail_settings, clock=clock).run_once()
    assert await mailer.run_once() == 3
    assert _sent(inbox) == sorted([user.email, user.email, asking.owner.email])
    for _, message in inbox.messages:
        assert "expires in 1 day" in message["Subject"]
        assert secret not in str(message)
        assert secret[:14] not in str(message)


async def test_a_disabled_endpoint_emails_each_admin_once_when_asked_too(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    receiver: Receiver,
    inbox: Inbox,
    mailer: alert_email.Mailer,
) -> None:
    tenant = await create_tenant(session)
    staff = await _staff(session, tenant)
    await client.patch("/v1/account", json={"alert_emails_to_admins": True}, headers=tenant.headers)
    await endpoint_for(client, tenant, receiver)
    receiver.default = Answer(410)
    await create_application(client, tenant)
    await delivery.run_once()
    assert await mailer.run_once() == 2
    assert _sent(inbox) == sorted([staff["owner"], staff["admin"]])

"""Webhook endpoints: where an account's events go, and the secrets that sign them.

A secret is returned once, by the call that made it (create, rotate); it is stored encrypted
(``keyservice.secretbox``) and never read back through the API. Another account's endpoint is
"not found", never "forbidden".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.audit import service as audit
from keyservice.errors import InvalidWebhookUrl, NotFound, UnknownEventType
from keyservice.events import catalogue
from keyservice.events import service as events
from keyservice.events.product import ProductCatalogue
from keyservice.models import (
    MessageStatus,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    utcnow,
)
from keyservice.pagination import PageParams, paginate
from keyservice.secretbox import SecretBox
from keyservice.verification.service import Principal
from keyservice.webhooks import fanout, signing
from keyservice.webhooks.schemas import EndpointCreate, EndpointUpdate
from keyservice.webhooks.sending import Outcome, Request, body_of, build_request, send
from keyservice.webhooks.ssrf import Policy, Refused
from keyservice.webhooks.transport import Sender

logger = logging.getLogger(__name__)


def check_event_types(types: Iterable[str], known: Collection[str]) -> list[str]:
    """``types`` without repeats; ``UnknownEventType`` naming the first that is not known."""
    types = list(dict.fromkeys(types))
    for index, name in enumerate(types):
        if name not in known:
            raise UnknownEventType(
                f"event_types.{index}: unknown event type {name!r} (see GET /v1/event-types)",
                field=f"event_types.{index}",
                event_type=name,
            )
    return types


async def check_url(url: str, *, policy: Policy) -> None:
    try:
        await policy.check(url)
    except Refused as refused:
        raise InvalidWebhookUrl(f"url: {refused.message}", field="url") from None


async def create_endpoint(
    session: AsyncSession,
    actor: Principal,
    data: EndpointCreate,
    *,
    box: SecretBox,
    policy: Policy,
    known_types: Collection[str],
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret (the only time it is returned)."""
    event_types = check_event_types(data.event_types, known_types)
    await check_url(data.url, policy=policy)
    secret = signing.new_secret()
    now = utcnow()
    endpoint = WebhookEndpoint(
        account_id=actor.account_id,
        url=data.url,
        description=data.description,
        event_types=event_types,
        enabled=data.enabled,
        disabled_reason=None if data.enabled else "manual",
        disabled_at=None if data.enabled else now,
        secret_encrypted=box.encrypt(secret),
        created_at=now,
        updated_at=now,
    )
    session.add(endpoint)
    await session.flush()
    await audit.record(
        session,
        actor,
        action="webhook_endpoint.created",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        details={"url": endpoint.url, "event_types": event_types, "enabled": endpoint.enabled},
    )
    return endpoint, secret


async def get_endpoint(
    session: AsyncSession, *, account_id: uuid.UUID, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.account_id != account_id:
        raise NotFound("Webhook endpoint not found")
    return endpoint


async def list_endpoints(
    session: AsyncSession, *, account_id: uuid.UUID, page: PageParams
) -> tuple[Sequence[WebhookEndpoint], str | None]:
    statement = select(WebhookEndpoint).where(WebhookEndpoint.account_id == account_id)
    return await paginate(
        session, statement, page, created_at=WebhookEndpoint.created_at, id_=WebhookEndpoint.id
    )


async def update_endpoint(
    session: AsyncSession,
    actor: Principal,
    endpoint_id: uuid.UUID,
    data: EndpointUpdate,
    *,
    policy: Policy,
    known_types: Collection[str],
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "event_types" in changes:
        changes["event_types"] = check_event_types(changes["event_types"], known_types)
    if "url" in changes:
        await check_url(changes["url"], policy=policy)
    changed = audit.apply_changes(endpoint, changes)
    if not changed:
        return endpoint
    endpoint.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        actor,
        action="webhook_endpoint.updated",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        details=changed,
    )
    return endpoint


async def delete_endpoint(session: AsyncSession, actor: Principal, endpoint_id: uuid.UUID) -> None:
    """Delete the endpoint and, with it, its messages and their attempts."""
    endpoint = await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    await session.delete(endpoint)
    await session.flush()
    await audit.record(
        session,
        actor,
        action="webhook_endpoint.deleted",
        target_type="webhook_endpoint",
        target_id=endpoint_id,
        details={"url": endpoint.url},
    )


async def set_enabled(
    session: AsyncSession, actor: Principal, endpoint_id: uuid.UUID, *, enabled: bool
) -> WebhookEndpoint:
    """Enable or disable the endpoint. Enabling it starts afresh: its pending messages are
    delivered, and its failing time counts from its next failure."""
    endpoint = await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    if endpoint.enabled == enabled:
        return endpoint
    now = utcnow()
    endpoint.enabled = enabled
    endpoint.disabled_reason = None if enabled else "manual"
    endpoint.disabled_at = None if enabled else now
    endpoint.failing_since = None
    endpoint.updated_at = now
    await session.flush()
    await audit.record(
        session,
        actor,
        action="webhook_endpoint.enabled" if enabled else "webhook_endpoint.disabled",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
    )
    return endpoint


async def rotate_secret(
    session: AsyncSession,
    actor: Principal,
    endpoint_id: uuid.UUID,
    *,
    grace_seconds: int,
    box: SecretBox,
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the current one keeps signing beside it for ``grace_seconds`` (0: it
    stops at once)."""
    endpoint = await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    secret = signing.new_secret()
    now = utcnow()
    if grace_seconds > 0:
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = now + timedelta(seconds=grace_seconds)
    else:
        endpoint.previous_secret_encrypted = None
        endpoint.previous_secret_expires_at = None
    endpoint.secret_encrypted = box.encrypt(secret)
    endpoint.secret_rotated_at = now
    endpoint.updated_at = now
    await session.flush()
    await audit.record(
        session,
        actor,
        action="webhook_endpoint.secret_rotated",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        details={"grace_period_seconds": grace_seconds},
    )
    return endpoint, secret


def signing_secrets(endpoint: WebhookEndpoint, *, box: SecretBox) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one while its
    grace period lasts."""
    secrets_ = [box.decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > utcnow()
    ):
        secrets_.append(box.decrypt(endpoint.previous_secret_encrypted))
    return secrets_


# --- deliveries ---------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    page: PageParams,
    status: str | None = None,
    event_type: str | None = None,
) -> tuple[list[tuple[WebhookMessage, list[WebhookAttempt]]], str | None]:
    """The endpoint's messages, newest first, each with its attempts, oldest first."""
    await get_endpoint(session, account_id=account_id, endpoint_id=endpoint_id)
    statement = select(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint_id)
    if status is not None:
        statement = statement.where(WebhookMessage.status == status)
    if event_type is not None:
        statement = statement.where(WebhookMessage.event_type == event_type)
    messages, next_cursor = await paginate(
        session, statement, page, created_at=WebhookMessage.created_at, id_=WebhookMessage.id
    )
    return await _with_attempts(session, messages), next_cursor


async def _with_attempts(
    session: AsyncSession, messages: Sequence[WebhookMessage]
) -> list[tuple[WebhookMessage, list[WebhookAttempt]]]:
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {m.id: [] for m in messages}
    if messages:
        for attempt in await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.message_id.in_(list(attempts)))
            .order_by(WebhookAttempt.attempted_at, WebhookAttempt.id)
        ):
            attempts[attempt.message_id].append(attempt)
    return [(m, attempts[m.id]) for m in messages]


async def _wake_workers(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(fanout.CHANNEL, "")))


async def redeliver(
    session: AsyncSession,
    actor: Principal,
    *,
    endpoint_id: uuid.UUID,
    message_id: uuid.UUID,
) -> tuple[WebhookMessage, list[WebhookAttempt]]:
    """Deliver the message again now, with a fresh series of retries (under the same
    ``webhook-id``), whatever its status. An endpoint that is disabled gets it once enabled."""
    await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    message = await session.get(WebhookMessage, message_id)
    if message is None or message.endpoint_id != endpoint_id:
        raise NotFound("Message not found")
    _again(message)
    await session.flush()
    await _wake_workers(session)
    await audit.record(
        session,
        actor,
        action="webhook_message.redelivered",
        target_type="webhook_message",
        target_id=message.id,
        details={"endpoint_id": str(endpoint_id)},
    )
    [with_attempts] = await _with_attempts(session, [message])
    return with_attempts


def _again(message: WebhookMessage) -> None:
    message.status = MessageStatus.pending
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.claimed_by = None
    message.finished_at = None


async def replay(
    session: AsyncSession, actor: Principal, *, endpoint_id: uuid.UUID, since: datetime
) -> int:
    """Deliver again every failed message of the endpoint created since ``since``: how many."""
    await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    rows = (
        await session.execute(
            update(WebhookMessage)
            .where(
                WebhookMessage.endpoint_id == endpoint_id,
                WebhookMessage.status == MessageStatus.failed,
                WebhookMessage.created_at >= since,
            )
            .values(
                status=MessageStatus.pending,
                attempts=0,
                next_attempt_at=utcnow(),
                claimed_by=None,
                finished_at=None,
            )
            .returning(WebhookMessage.id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    replayed = len(rows)
    if replayed:
        await _wake_workers(session)
    await audit.record(
        session,
        actor,
        action="webhook_messages.replayed",
        target_type="webhook_endpoint",
        target_id=endpoint_id,
        details={"since": since.isoformat(), "replayed": replayed},
    )
    return replayed


def sample_body(event_type: str, product: ProductCatalogue) -> bytes:
    """A sample event's body: the type's example from the catalogue, as of now."""
    return body_of(event_type, utcnow(), events.example_of(event_type, product))


async def test_endpoint(
    session: AsyncSession,
    actor: Principal,
    *,
    endpoint_id: uuid.UUID,
    event_type: str,
    box: SecretBox,
    policy: Policy,
    sender: Sender,
    product: ProductCatalogue,
) -> tuple[Request, Outcome]:
    """Send a sample event of ``event_type`` to the endpoint now (enabled or not), outside the
    outbox: nothing is recorded, nothing retried. What was sent, and what came back."""
    endpoint = await get_endpoint(session, account_id=actor.account_id, endpoint_id=endpoint_id)
    check_event_types([event_type], events.known_types(product))
    request = build_request(
        endpoint.url,
        signing_secrets(endpoint, box=box),
        message_id=str(uuid.uuid4()),
        body=sample_body(event_type, product),
    )
    return request, await send(sender, policy, request)


async def disable(
    session: AsyncSession, endpoint_id: uuid.UUID, *, reason: str, now: datetime
) -> int:
    """Disable an endpoint for ``reason`` (``gone``, ``failing``), with its event: 1, or 0 if
    it is disabled already (by another instance, say)."""
    endpoint = WebhookEndpoint.__table__.c
    disabled = (
        await session.execute(
            update(WebhookEndpoint)
            .where(endpoint.id == endpoint_id, endpoint.enabled.is_(True))
            .values(enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
            .returning(endpoint.account_id, endpoint.url, endpoint.failing_since)
        )
    ).one_or_none()
    if disabled is None:
        return 0
    logger.warning("webhook endpoint %s disabled (%s)", endpoint_id, reason)
    await events.record(
        session,
        account_id=disabled.account_id,
        data=catalogue.WebhookEndpointDisabledData(
            endpoint_id=endpoint_id,
            url=disabled.url,
            reason=reason,
            failing_since=disabled.failing_since if reason == "failing" else None,
        ),
    )
    return 1

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from keyservice.config import SettingsDep
from keyservice.db import SessionDep
from keyservice.errors import InvalidWebhookUrl, NotFound, UnknownEventType, responses
from keyservice.events import service as events
from keyservice.events.product import ProductCatalogueDep
from keyservice.pagination import Page, PageDep
from keyservice.secretbox import SecretBox
from keyservice.verification.dependency import AUTH_ERRORS, require
from keyservice.verification.service import Principal
from keyservice.webhooks import service
from keyservice.webhooks.schemas import (
    DeliveryStatus,
    EndpointCreate,
    EndpointOut,
    EndpointUpdate,
    EndpointWithSecret,
    MessageOut,
    Replay,
    Replayed,
    RotateSecret,
    SentRequest,
    TestEvent,
    TestResult,
)
from keyservice.webhooks.ssrf import Policy

router = APIRouter(prefix="/v1/webhooks/endpoints", tags=["webhooks"])

WebhookReader = Annotated[Principal, Depends(require("keyservice:webhooks:read"))]
WebhookWriter = Annotated[Principal, Depends(require("keyservice:webhooks:write"))]


async def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.keyring.box()
    return box


async def _policy(request: Request) -> Policy:
    policy: Policy = request.app.state.ssrf_policy
    return policy


BoxDep = Annotated[SecretBox, Depends(_box)]
PolicyDep = Annotated[Policy, Depends(_policy)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*AUTH_ERRORS, InvalidWebhookUrl, UnknownEventType),
)
async def create_endpoint(
    session: SessionDep,
    actor: WebhookWriter,
    box: BoxDep,
    policy: PolicyDep,
    product: ProductCatalogueDep,
    body: EndpointCreate,
) -> EndpointWithSecret:
    """Register a URL to receive the account's events, of the types in `event_types` (none:
    all). The answer holds the endpoint's signing secret, **shown this once**: every delivery
    carries Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`)
    that a receiver verifies with it.

    In production the URL must be https and its host must resolve to public addresses only;
    loopback, private, link-local and metadata addresses are refused, here and at each
    delivery."""
    endpoint, secret = await service.create_endpoint(
        session, actor, body, box=box, policy=policy, known_types=events.known_types(product)
    )
    return EndpointWithSecret.with_secret(endpoint, secret)


@router.get("", responses=responses(*AUTH_ERRORS))
async def list_endpoints(
    session: SessionDep, actor: WebhookReader, page: PageDep
) -> Page[EndpointOut]:
    """The account's webhook endpoints, newest first. Secrets are never listed."""
    endpoints, next_cursor = await service.list_endpoints(
        session, account_id=actor.account_id, page=page
    )
    return Page(data=[EndpointOut.of(e) for e in endpoints], next_cursor=next_cursor)


@router.get("/{endpoint_id}", responses=responses(*AUTH_ERRORS, NotFound))
async def get_endpoint(
    session: SessionDep, actor: WebhookReader, endpoint_id: uuid.UUID
) -> EndpointOut:
    """One webhook endpoint, without its secret."""
    endpoint = await service.get_endpoint(
        session, account_id=actor.account_id, endpoint_id=endpoint_id
    )
    return EndpointOut.of(endpoint)


@router.patch(
    "/{endpoint_id}",
    responses=responses(*AUTH_ERRORS, NotFound, InvalidWebhookUrl, UnknownEventType),
)
async def update_endpoint(
    session: SessionDep,
    actor: WebhookWriter,
    policy: PolicyDep,
    product: ProductCatalogueDep,
    endpoint_id: uuid.UUID,
    body: EndpointUpdate,
) -> EndpointOut:
    """Change an endpoint's URL, description or event types. Messages already written keep
    going to it; the new event types apply to events from now on."""
    endpoint = await service.update_endpoint(
        session,
        actor,
        endpoint_id,
        body,
        policy=policy,
        known_types=events.known_types(product),
    )
    return EndpointOut.of(endpoint)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def delete_endpoint(
    session: SessionDep, actor: WebhookWriter, endpoint_id: uuid.UUID
) -> None:
    """Delete an endpoint, with its messages and their delivery history."""
    await service.delete_endpoint(session, actor, endpoint_id)


@router.post("/{endpoint_id}/enable", responses=responses(*AUTH_ERRORS, NotFound))
async def enable_endpoint(
    session: SessionDep, actor: WebhookWriter, endpoint_id: uuid.UUID
) -> EndpointOut:
    """Enable an endpoint, whoever disabled it (a call, a 410 answer, or keyservice after it
    failed for too long): its pending messages are delivered again."""
    endpoint = await service.set_enabled(session, actor, endpoint_id, enabled=True)
    return EndpointOut.of(endpoint)


@router.post("/{endpoint_id}/disable", responses=responses(*AUTH_ERRORS, NotFound))
async def disable_endpoint(
    session: SessionDep, actor: WebhookWriter, endpoint_id: uuid.UUID
) -> EndpointOut:
    """Disable an endpoint: nothing is sent to it until it is enabled again; events meanwhile
    wait for it."""
    endpoint = await service.set_enabled(session, actor, endpoint_id, enabled=False)
    return EndpointOut.of(endpoint)


@router.post("/{endpoint_id}/rotate-secret", responses=responses(*AUTH_ERRORS, NotFound))
async def rotate_secret(
    session: SessionDep,
    settings: SettingsDep,
    actor: WebhookWriter,
    box: BoxDep,
    endpoint_id: uuid.UUID,
    body: RotateSecret | None = None,
) -> EndpointWithSecret:
    """A new signing secret, **shown this once**. The previous one keeps signing beside it for
    the grace period (default 24 hours): deliveries then carry two signatures in
    `webhook-signature`, separated by a space, so that a receiver verifies with either while it
    switches."""
    grace = settings.webhook_secret_grace_seconds
    if body is not None and body.grace_period_seconds is not None:
        grace = body.grace_period_seconds
    endpoint, secret = await service.rotate_secret(
        session, actor, endpoint_id, grace_seconds=grace, box=box
    )
    return EndpointWithSecret.with_secret(endpoint, secret)


@router.get("/{endpoint_id}/deliveries", responses=responses(*AUTH_ERRORS, NotFound))
async def list_deliveries(
    session: SessionDep,
    actor: WebhookReader,
    page: PageDep,
    endpoint_id: uuid.UUID,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    event_type: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z_.]+$", examples=["key.created"])
    ] = None,
) -> Page[MessageOut]:
    """The endpoint's messages, newest first, by `status` and `event_type`, a page at a time:
    each with every attempt made (when, the status code, the latency, the first 4 KB of the
    answer, or why no answer came: `refused`, `timeout`, `tls`, `dns`, ...)."""
    messages, next_cursor = await service.list_deliveries(
        session,
        account_id=actor.account_id,
        endpoint_id=endpoint_id,
        page=page,
        status=status,
        event_type=event_type,
    )
    return Page(data=[MessageOut.of(m, a) for m, a in messages], next_cursor=next_cursor)


@router.post(
    "/{endpoint_id}/deliveries/{message_id}/redeliver",
    responses=responses(*AUTH_ERRORS, NotFound),
)
async def redeliver(
    session: SessionDep, actor: WebhookWriter, endpoint_id: uuid.UUID, message_id: uuid.UUID
) -> MessageOut:
    """Deliver a message again, now, with a fresh series of retries, whatever its status: the
    same event under the same `webhook-id`. A disabled endpoint gets it once enabled."""
    message, attempts = await service.redeliver(
        session, actor, endpoint_id=endpoint_id, message_id=message_id
    )
    return MessageOut.of(message, attempts)


@router.post("/{endpoint_id}/replay", responses=responses(*AUTH_ERRORS, NotFound))
async def replay(
    session: SessionDep, actor: WebhookWriter, endpoint_id: uuid.UUID, body: Replay
) -> Replayed:
    """Deliver again every failed message of the endpoint created since `since`: after an
    outage of the receiver, say."""
    replayed = await service.replay(session, actor, endpoint_id=endpoint_id, since=body.since)
    return Replayed(replayed=replayed)


@router.post("/{endpoint_id}/test", responses=responses(*AUTH_ERRORS, NotFound, UnknownEventType))
async def test_endpoint(
    session: SessionDep,
    actor: WebhookWriter,
    box: BoxDep,
    policy: PolicyDep,
    product: ProductCatalogueDep,
    request: Request,
    endpoint_id: uuid.UUID,
    body: TestEvent,
) -> TestResult:
    """Send a sample event of the chosen type to the endpoint now, enabled or not, and answer
    with the attempt: its status code, latency and the start of the answer (or why none came),
    and the exact headers and body sent, to compare with what a receiver computes. The sample
    is not recorded, and not retried."""
    sent, outcome = await service.test_endpoint(
        session,
        actor,
        endpoint_id=endpoint_id,
        event_type=body.event_type,
        box=box,
        policy=policy,
        sender=request.app.state.runtime.delivery.tester,
        product=product,
    )
    return TestResult(
        request=SentRequest(url=sent.url, headers=sent.headers, body=sent.body.decode()),
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        response_excerpt=outcome.excerpt,
        error=outcome.error,
        success=outcome.success,
    )

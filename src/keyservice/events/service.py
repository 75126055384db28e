"""Recording events, and reading them back.

An event is recorded by the service that caused it, in the caller's transaction: it is written
with the change or not at all, and a rolled-back change records nothing. The events table is the
outbox that webhooks deliver from: its subscribers (``subscribe``) are told of each event in the
same transaction. Payloads are the catalogue's models (``catalogue.py``), so
that what is stored is what is documented.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice.db import upsert
from keyservice.errors import InvalidEventData, UnknownEventType
from keyservice.events import catalogue
from keyservice.events.product import ProductCatalogue
from keyservice.models import Event, Membership, utcnow
from keyservice.pagination import PageParams, paginate
from keyservice.verification.service import Principal


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event just written, as its subscribers are told of it."""

    id: uuid.UUID
    account_id: uuid.UUID
    type: str


# Called with the events each ``record_many`` wrote, in its transaction (webhooks fan out
# from here). The outbox knows its subscribers only through this list.
Subscriber = Callable[[AsyncSession, Sequence[Recorded]], Awaitable[None]]
_subscribers: list[Subscriber] = []


def subscribe(subscriber: Subscriber) -> None:
    """Have ``subscriber`` called, in the recording transaction, with every event recorded."""
    if subscriber not in _subscribers:
        _subscribers.append(subscriber)


@dataclass(frozen=True, slots=True)
class Published:
    """A product event's type and data, as its backend published them."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NewEvent:
    account_id: uuid.UUID
    data: BaseModel | Published
    key_id: uuid.UUID | None = None
    # At most one event per dedupe key, ever: "once per threshold and period" is a constraint.
    dedupe_key: str | None = None


async def record(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    data: BaseModel,
    key_id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
) -> None:
    """Record an event of the account in the caller's transaction. Its type is the one whose
    payload model ``data`` is."""
    await record_many(
        session,
        [NewEvent(account_id=account_id, data=data, key_id=key_id, dedupe_key=dedupe_key)],
    )


async def record_for_user(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    data: BaseModel,
    key_id: uuid.UUID | None = None,
) -> None:
    """Record an event about a user's own things (their personal keys), which reach every
    account the user has joined: in each of them, as the audit trail does. A user who has joined
    no account has no one to tell."""
    accounts = await joined_accounts(session, user_id)
    await record_many(session, [NewEvent(account_id=a, data=data, key_id=key_id) for a in accounts])


def _type_and_data(data: BaseModel | Published) -> tuple[str, dict[str, Any]]:
    if isinstance(data, Published):
        return data.type, data.data
    return catalogue.type_of(data), catalogue.dump(data)


async def record_many(session: AsyncSession, events: Iterable[NewEvent]) -> list[Recorded]:
    """Record events in one statement, in the caller's transaction, and return those written.
    An event whose ``dedupe_key`` was recorded before is skipped, not an error (``ON CONFLICT
    DO NOTHING``)."""
    now = utcnow()
    typed = [(event, *_type_and_data(event.data)) for event in events]
    rows = [
        {
            "id": uuid.uuid4(),
            "account_id": event.account_id,
            "type": type_,
            "key_id": event.key_id,
            "data": data,
            "dedupe_key": event.dedupe_key,
            "created_at": now,
        }
        for event, type_, data in typed
    ]
    if not rows:
        return []
    table = Event.__table__.c
    written = (
        await session.execute(
            upsert(session, Event.__table__)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(table.id, table.account_id, table.type)
        )
    ).all()
    recorded = [Recorded(row.id, row.account_id, row.type) for row in written]
    if recorded:
        for subscriber in _subscribers:
            await subscriber(session, recorded)
    return recorded


async def joined_accounts(session: AsyncSession, user_id: uuid.UUID) -> Sequence[uuid.UUID]:
    """The accounts whose invitation the user has accepted (or that they joined at once)."""
    return (
        await session.scalars(
            select(Membership.account_id).where(
                Membership.user_id == user_id, Membership.accepted_at.is_not(None)
            )
        )
    ).all()


def event_types() -> tuple[catalogue.EventType, ...]:
    """Every type of event keyservice records."""
    return catalogue.EVENT_TYPES


def known_types(product: ProductCatalogue) -> frozenset[str]:
    """Every event type of this deployment: keyservice's own, and the product's."""
    return frozenset(catalogue.BY_TYPE) | product.names()


def example_of(event_type: str, product: ProductCatalogue) -> dict[str, Any]:
    own = catalogue.BY_TYPE.get(event_type)
    if own is not None:
        return own.example
    declared = product.get(event_type)
    return declared.example if declared is not None else {}


async def publish(
    session: AsyncSession,
    actor: Principal,
    *,
    product: ProductCatalogue,
    type_: str,
    data: dict[str, Any],
    idempotency_key: str | None,
    max_data_bytes: int,
) -> tuple[Event, bool]:
    """Record a product event of the actor's account, and whether it is new: a repeat of an
    ``idempotency_key`` records nothing and returns the first event."""
    declared = product.get(type_)
    if declared is None:
        raise UnknownEventType(
            f"type: {type_!r} is not one of the product's event types (see GET /v1/event-types)",
            field="type",
            event_type=type_,
        )
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_data_bytes:
        raise InvalidEventData(
            f"data: {size} bytes as JSON, more than the {max_data_bytes} allowed", field="data"
        )
    declared.check(data)
    dedupe_key = None
    if idempotency_key is not None:
        # Hashed: a key of any length fits, and keys of two accounts never meet.
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
        dedupe_key = f"publish:{actor.account_id}:{digest}"
    recorded = await record_many(
        session,
        [
            NewEvent(
                account_id=actor.account_id,
                data=Published(type_, data),
                dedupe_key=dedupe_key,
            )
        ],
    )
    if recorded:
        event = await session.get(Event, recorded[0].id)
        assert event is not None
        return event, True
    first = await session.scalar(select(Event).where(Event.dedupe_key == dedupe_key))
    assert first is not None
    return first, False


async def list_events(
    session: AsyncSession,
    actor: Principal,
    *,
    page: PageParams,
    type_: str | None = None,
    key_id: uuid.UUID | None = None,
) -> tuple[Sequence[Event], str | None]:
    """The actor's account's events, newest first, but for those it may not read: an event tells
    what it is about (a member's email, a key's name), so each type takes the scope that reads
    that (``EventType.scope``)."""
    statement = select(Event).where(Event.account_id == actor.account_id)
    hidden = [t.name for t in catalogue.EVENT_TYPES if not actor.allows(t.scope)]
    if hidden:
        statement = statement.where(Event.type.not_in(hidden))
    if type_ is not None:
        statement = statement.where(Event.type == type_)
    if key_id is not None:
        statement = statement.where(Event.key_id == key_id)
    return await paginate(session, statement, page, created_at=Event.created_at, id_=Event.id)

"""Small async factories: data for a test in one call, through the services themselves."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

import secrets_seen
from keyservice.accounts import service as accounts_service
from keyservice.keys import service as keys_service
from keyservice.models import Account, ApiKey, KeyKind, Membership, Role, User, utcnow
from keyservice.security import Environment, generate_key, hash_key
from keyservice.verification.service import KeyRecord


@dataclass
class Tenant:
    account: Account
    owner: User
    owner_key: str

    @property
    def headers(self) -> dict[str, str]:
        return auth(self.owner_key)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_tenant(session: AsyncSession, name: str = "Acme CRM") -> Tenant:
    account, user, secret = await accounts_service.bootstrap(
        session,
        account_name=name,
        owner_email=f"owner-{uuid.uuid4().hex[:8]}@example.com",
        password=None,
        key_prefix="ks",
    )
    await session.commit()
    secrets_seen.remember(secret)
    return Tenant(account=account, owner=user, owner_key=secret)


async def create_user(
    session: AsyncSession,
    *,
    accounts: dict[uuid.UUID, Role],
    email: str | None = None,
) -> User:
    user = User(email=email or f"user-{uuid.uuid4().hex[:8]}@example.com")
    session.add(user)
    await session.flush()
    for account_id, role in accounts.items():
        session.add(
            Membership(account_id=account_id, user_id=user.id, role=role, accepted_at=utcnow())
        )
    await session.commit()
    return user


async def create_personal_key(
    session: AsyncSession,
    user: User,
    *,
    scopes: list[str],
    expires_at: datetime | None = None,
    environment: Environment = Environment.live,
) -> str:
    key, secret = keys_service.new_key(
        prefix="ks",
        kind=KeyKind.personal,
        name="personal",
        environment=environment,
        scopes=scopes,
        expires_at=expires_at,
        user_id=user.id,
    )
    session.add(key)
    await session.commit()
    secrets_seen.remember(secret)
    return secret


async def create_application(
    client: httpx.AsyncClient, tenant: Tenant, **fields: Any
) -> dict[str, Any]:
    body = {
        "name": "Zapier sync",
        "developer_email": "dev@partner.example",
        "permissions": ["contacts:read", "contacts:write", "deals:*"],
    } | fields
    response = await client.post("/v1/applications", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def create_key(
    client: httpx.AsyncClient, tenant: Tenant, application_id: str, **fields: Any
) -> dict[str, Any]:
    body = {"name": "Production Integration", "scopes": ["contacts:read"]} | fields
    response = await client.post(
        f"/v1/applications/{application_id}/keys", json=body, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def create_limited_key(
    client: httpx.AsyncClient, session: AsyncSession, rate_limit: dict[str, int], **fields: Any
) -> str:
    """A new tenant's application key with ``rate_limit``: its secret."""
    tenant = await create_tenant(session)
    application = await create_application(client, tenant)
    created = await create_key(client, tenant, application["id"], rate_limit=rate_limit, **fields)
    return str(created["key"])


def key_record(**fields: object) -> KeyRecord:
    """What verification knows of an application's key, without a database: ``fields`` override."""
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "kind": KeyKind.application,
        "name": "k",
        "environment": Environment.live,
        "account_id": uuid.uuid4(),
        "application_id": uuid.uuid4(),
        "user_id": None,
        "scopes": frozenset({"contacts:read"}),
        "key_hash": hash_key(generate_key("ks", Environment.live)),
        "expires_at": None,
        "revoked_at": None,
        "previous_hash": None,
        "previous_expires_at": None,
    }
    return KeyRecord(**(values | fields))  # type: ignore[arg-type]


async def create_personal_keys(session: AsyncSession, user: User, count: int) -> list[ApiKey]:
    """``count`` personal keys of ``user``, straight in the database (no secrets kept)."""
    keys = [
        keys_service.new_key(
            prefix="ks",
            kind=KeyKind.personal,
            name=f"Key {number}",
            environment=Environment.live,
            scopes=[],
            expires_at=None,
            user_id=user.id,
        )[0]
        for number in range(count)
    ]
    session.add_all(keys)
    await session.commit()
    return keys


async def create_endpoint(
    client: httpx.AsyncClient, tenant: Tenant, url: str, **fields: Any
) -> dict[str, Any]:
    """A webhook endpoint of the tenant's account; its secret is in ``["secret"]``."""
    body = {"url": url} | fields
    response = await client.post("/v1/webhooks/endpoints", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    secrets_seen.remember(data["secret"])
    return data

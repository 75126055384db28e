"""Keys missing from the cache are looked up together: a new instance's first requests cost one
statement for many keys, not one (and a connection) each."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from factories import create_personal_key, create_tenant, create_user
from keyservice.config import Settings
from keyservice.models import Role
from keyservice.runtime import Runtime
from keyservice.security import Environment, generate_key, hash_key
from keyservice.verification.verifier import Verifier


def _verifier(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Verifier:
    return Runtime(settings, sessionmaker=sessionmaker).verifier


def _lookups(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT") and "api_keys" in s]


async def test_keys_missing_from_the_cache_are_looked_up_together(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    sql_statements: list[str],
) -> None:
    tenant = await create_tenant(session)
    owner, member = (
        await create_user(session, accounts={tenant.account.id: Role.owner}),
        await create_user(session, accounts={tenant.account.id: Role.member}),
    )
    secrets = [
        await create_personal_key(session, user, scopes=["contacts:write"])
        for user in [owner, member] * 20
    ]
    unknown = generate_key("ks", Environment.live)
    verifier = _verifier(settings, sessionmaker)
    sql_statements.clear()
    records = await asyncio.gather(
        *(verifier.record(hash_key(secret)) for secret in [*secrets, unknown])
    )
    # The first lookup is the first key alone; the others wait for it and go in one more.
    assert len(_lookups(sql_statements)) <= 2
    *found, missing = records
    assert missing is None
    assert [record.key_hash if record else None for record in found] == [
        hash_key(secret) for secret in secrets
    ]
    # Each key with its own user's rights.
    assert [record.roles[tenant.account.id] for record in found if record] == [
        Role.owner,
        Role.member,
    ] * 20
    # Now cached: no statement.
    sql_statements.clear()
    assert await verifier.record(hash_key(secrets[0])) is found[0]
    assert _lookups(sql_statements) == []


async def test_requests_for_one_key_share_its_lookup_and_one_giving_up_spares_the_others(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    sql_statements: list[str],
) -> None:
    tenant = await create_tenant(session)
    key_hash = hash_key(tenant.owner_key)
    verifier = _verifier(settings, sessionmaker)
    sql_statements.clear()
    waiting = [asyncio.ensure_future(verifier.record(key_hash)) for _ in range(5)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    records = await asyncio.gather(*waiting[1:])
    assert len({id(record) for record in records}) == 1
    assert records[0] is not None
    assert records[0].key_hash == key_hash
    assert len(_lookups(sql_statements)) == 1

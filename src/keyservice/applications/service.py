from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice import scopes as scope_rules
from keyservice.applications.schemas import ApplicationCreate, ApplicationUpdate
from keyservice.audit import service as audit
from keyservice.errors import NotFound
from keyservice.invalidations import Target, invalidate
from keyservice.models import Application
from keyservice.pagination import PageParams, paginate
from keyservice.ratelimit.schemas import limit_columns
from keyservice.verification.service import Principal


async def create_application(
    session: AsyncSession, actor: Principal, data: ApplicationCreate, *, catalogue: tuple[str, ...]
) -> Application:
    permissions = list(dict.fromkeys(data.permissions))
    scope_rules.check_in_catalogue(permissions, catalogue)
    scope_rules.check_grantable(actor.scopes, permissions)
    application = Application(
        account_id=actor.account_id,
        name=data.name,
        developer_email=str(data.developer_email),
        description=data.description,
        permissions=permissions,
        monthly_quota=data.monthly_quota,
        **limit_columns(data.rate_limit),
    )
    session.add(application)
    await session.flush()
    await audit.record(
        session,
        actor,
        action="application.created",
        target_type="application",
        target_id=application.id,
        details={"name": application.name, "permissions": permissions},
    )
    return application


async def get_application(
    session: AsyncSession, *, account_id: uuid.UUID, application_id: uuid.UUID
) -> Application:
    application = await session.get(Application, application_id)
    # Another account's application is "not found", never "forbidden": no existence oracle.
    if application is None or application.account_id != account_id:
        raise NotFound("Application not found")
    return application


async def list_applications(
    session: AsyncSession, *, account_id: uuid.UUID, page: PageParams
) -> tuple[Sequence[Application], str | None]:
    statement = select(Application).where(Application.account_id == account_id)
    return await paginate(
        session, statement, page, created_at=Application.created_at, id_=Application.id
    )


async def update_application(
    session: AsyncSession,
    actor: Principal,
    application_id: uuid.UUID,
    data: ApplicationUpdate,
    *,
    catalogue: tuple[str, ...],
) -> Application:
    application = await get_application(
        session, account_id=actor.account_id, application_id=application_id
    )
    changes = data.model_dump(
        exclude_unset=True, exclude_none=True, exclude={"rate_limit", "monthly_quota"}
    )
    # For the limits, an explicit null means "inherit again".
    if "rate_limit" in data.model_fields_set:
        changes |= limit_columns(data.rate_limit)
    if "monthly_quota" in data.model_fields_set:
        changes["monthly_quota"] = data.monthly_quota
    if "permissions" in changes:
        changes["permissions"] = list(dict.fromkeys(changes["permissions"]))
        scope_rules.check_in_catalogue(changes["permissions"], catalogue)
        scope_rules.check_grantable(actor.scopes, changes["permissions"])
    if "developer_email" in changes:
        changes["developer_email"] = str(changes["developer_email"])
    changed = audit.apply_changes(application, changes)
    if not changed:
        return application
    await session.flush()
    if changed.keys() - {"name", "developer_email", "description"}:
        # Permissions and limits are part of every cached key record of the application.
        await invalidate(session, Target("application", application.id))
    await audit.record(
        session,
        actor,
        action="application.updated",
        target_type="application",
        target_id=application.id,
        details=changed,
    )
    return application


async def delete_application(
    session: AsyncSession, actor: Principal, application_id: uuid.UUID
) -> None:
    """Delete the application and, through the foreign key's cascade, its keys."""
    application = await get_application(
        session, account_id=actor.account_id, application_id=application_id
    )
    await session.delete(application)
    await session.flush()
    await invalidate(session, Target("application", application_id))
    await audit.record(
        session,
        actor,
        action="application.deleted",
        target_type="application",
        target_id=application_id,
        details={"name": application.name},
    )

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keyservice import scopes as scope_rules
from keyservice.applications.schemas import ApplicationCreate, ApplicationUpdate
from keyservice.audit import service as audit
from keyservice.errors import NotFound
from keyservice.events import catalogue as event_types
from keyservice.events import service as events
from keyservice.invalidations import Target, invalidate
from keyservice.models import ApiKey, Application
from keyservice.pagination import PageParams, paginate
from keyservice.ratelimit.schemas import RateLimit, limit_columns
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
    await events.record(
        session,
        account_id=application.account_id,
        data=event_types.ApplicationCreatedData(
            application_id=application.id,
            name=application.name,
            developer_email=application.developer_email,
            description=application.description,
            permissions=application.permissions,
            rate_limit=RateLimit.of(application),
            monthly_quota=application.monthly_quota,
        ),
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
    rate_limit = RateLimit.of(application)
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
    await _record_updated(session, application, changed, rate_limit)
    return application


async def _record_updated(
    session: AsyncSession,
    application: Application,
    changed: dict[str, dict[str, Any]],
    rate_limit: RateLimit | None,
) -> None:
    """``application.updated`` with the changed fields as the API names them (a rate limit is
    one field, not three columns)."""
    changes: dict[str, Any] = {
        field: event_types.change(changed[field]["from"], getattr(application, field))
        for field in ("name", "developer_email", "description", "permissions", "monthly_quota")
        if field in changed
    }
    if RateLimit.of(application) != rate_limit:
        changes["rate_limit"] = event_types.change(rate_limit, RateLimit.of(application))
    if changes:
        await events.record(
            session,
            account_id=application.account_id,
            data=event_types.ApplicationUpdatedData(
                application_id=application.id,
                changes=event_types.ApplicationChanges.model_validate(changes),
            ),
        )


async def delete_application(
    session: AsyncSession, actor: Principal, application_id: uuid.UUID
) -> None:
    """Delete the application and, through the foreign key's cascade, its keys."""
    application = await get_application(
        session, account_id=actor.account_id, application_id=application_id
    )
    key_ids = (
        await session.scalars(
            select(ApiKey.id)
            .where(ApiKey.application_id == application.id)
            .order_by(ApiKey.created_at, ApiKey.id)
        )
    ).all()
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
    await events.record(
        session,
        account_id=application.account_id,
        data=event_types.ApplicationDeletedData(
            application_id=application_id, name=application.name, key_ids=list(key_ids)
        ),
    )

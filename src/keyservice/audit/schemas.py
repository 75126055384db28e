from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "5f0c8a9e-3b1f-4a57-9d53-2f1c7b7e9a10",
                    "action": "key.revoked",
                    "target_type": "api_key",
                    "target_id": "1c4e2b7a-8f3d-4b8e-a0a1-6f9b3c2d1e0f",
                    "actor_key_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                    "actor_user_id": None,
                    "client_address": "203.0.113.7",
                    "details": {},
                    "created_at": "2026-11-21T09:30:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    action: str
    target_type: str
    target_id: str
    actor_key_id: uuid.UUID | None
    actor_user_id: uuid.UUID | None
    client_address: str | None
    details: dict[str, Any]
    created_at: datetime

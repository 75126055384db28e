from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keyservice.events.catalogue import BY_TYPE

_THRESHOLD = BY_TYPE["usage.threshold"].example


class EventOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "8f1e2d3c-4b5a-4697-8e7f-6a5b4c3d2e1f",
                    "type": "usage.threshold",
                    "key_id": _THRESHOLD["key_id"],
                    "data": _THRESHOLD,
                    "created_at": "2026-11-21T09:30:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    type: str
    key_id: uuid.UUID | None = Field(
        description="The key the event is about, if any (`key_id` filters on it)."
    )
    data: dict[str, Any] = Field(description="The payload: its shape is its type's.")
    created_at: datetime

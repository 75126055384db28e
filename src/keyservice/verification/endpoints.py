"""The endpoint a proxied request counts under, in its key's usage."""

from __future__ import annotations

import re

from keyservice.fields import MAX_ENDPOINT_LENGTH, printable

_ID_SEGMENT = re.compile(
    r"^(\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[A-Za-z_-]*\d)[0-9A-Za-z_-]{16,})$"
)


def endpoint_template(method: str, path: str) -> str:
    """``GET /v1/contacts/42?x=1`` -> ``GET /v1/contacts/{id}``: ids would make every call its own
    endpoint."""
    path = path.split("?", 1)[0] or "/"
    segments = ["{id}" if _ID_SEGMENT.match(s) else s for s in path.split("/")]
    # The client's own text (a path with %00 in it): counted, with what no database stores
    # replaced.
    return printable(f"{method.upper()} {'/'.join(segments)}"[:MAX_ENDPOINT_LENGTH])

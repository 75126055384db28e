"""The committed OpenAPI document is what integrators read: it must match the code."""

from __future__ import annotations

import json

from keyservice.config import Settings
from keyservice.main import create_app
from servers import REPOSITORY

# Routes that take no key of their own: the catalogue, and logging in.
PUBLIC = {"/v1/scopes", "/v1/sessions"}
DOCUMENT = REPOSITORY / "openapi" / "openapi.json"


def _generated() -> dict[str, object]:
    return create_app(Settings(_env_file=None)).openapi()


def test_committed_document_is_current() -> None:
    committed = json.loads(DOCUMENT.read_text())
    assert committed == _generated(), "openapi/openapi.json is stale: run `make openapi`"


def test_every_protected_route_documents_its_errors() -> None:
    paths = _generated()["paths"]
    assert isinstance(paths, dict)
    for path, operations in paths.items():
        if not path.startswith("/v1/") or path in PUBLIC:
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("401", "403"):
                assert status in responses, f"{method.upper()} {path} does not list {status}"
                content = responses[status]["content"]
                assert "application/problem+json" in content


def test_parameters_are_present_or_absent_never_null() -> None:
    # A client that believed "X-Account-Id: string or null" sent `X-Account-Id: null` and got 422.
    paths = _generated()["paths"]
    assert isinstance(paths, dict)
    for path, operations in paths.items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                assert "null" not in json.dumps(parameter["schema"]), (
                    f"{method.upper()} {path}: {parameter['name']} is declared nullable"
                )

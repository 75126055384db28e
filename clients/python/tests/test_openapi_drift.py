"""The client cannot drift from the server: every operation it calls and every model it reads or
sends is checked against the committed ``openapi/openapi.json``.

- Each operation (method and path) exists, with the success status, answer schema, request body
  schema, path parameters and query parameters the client uses.
- Each model's fields exist in the schema it names (``__schema__``), with a compatible type: the
  same JSON type and format, the same enumeration, nullability where the client must accept or
  may send null, the same schema for nested objects. Every required member of an answer is in
  its model; every required member of a request is one the client always sends.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from keyservice_client import _operations as ops
from keyservice_client import models

DOCUMENT = Path(__file__).resolve().parents[3] / "openapi" / "openapi.json"
SPEC: dict[str, Any] = json.loads(DOCUMENT.read_text())
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
REF = "#/components/schemas/"

Direction = Literal["answer", "request"]

# Query parameters that the document states in an operation's description but does not declare
# (forward-auth reads its required scopes from a free-form query string); each is checked to be
# in the description at least.
DESCRIBED_ONLY = {("GET", "/v1/forward-auth"): {"scopes": "?scopes=contacts:read"}}


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.removeprefix(REF) if isinstance(ref, str) else None


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    name = _ref_name(schema)
    return SCHEMAS[name] if name is not None else schema


def _client_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("client_only")]


def model_problems(cls: type[Any], direction: Direction) -> list[str]:
    """What in ``cls`` does not match the document's schema ``cls.__schema__``."""
    name = cls.__schema__
    if name not in SCHEMAS:
        return [f"{cls.__name__}: no schema {name} in the document"]
    schema = SCHEMAS[name]
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    hints = typing.get_type_hints(cls)
    problems: list[str] = []
    for f in _client_fields(cls):
        where = f"{cls.__name__}.{f.name}"
        if f.name not in properties:
            problems.append(f"{where}: not a member of {name}")
            continue
        problems += type_problems(hints[f.name], properties[f.name], where, direction)
    names = {f.name for f in _client_fields(cls)}
    problems += [f"{cls.__name__}: lacks {name}'s required {m}" for m in sorted(required - names)]
    if direction == "request":
        for f in _client_fields(cls):
            sent_always = f.default is dataclasses.MISSING
            if f.name in required and not sent_always:
                problems.append(f"{cls.__name__}.{f.name}: required by {name}, may be left out")
    return problems


def _union(tp: Any) -> tuple[list[Any], bool]:
    """The members of a union but None and UNSET, and whether None is one."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a not in (type(None), models.Unset)]
        return rest, type(None) in args
    return [tp], False


def type_problems(tp: Any, schema: dict[str, Any], where: str, direction: Direction) -> list[str]:
    alternatives = schema["anyOf"] if "anyOf" in schema else [schema]
    schema_nullable = any(a.get("type") == "null" for a in alternatives)
    values = [a for a in alternatives if a.get("type") != "null"]
    options, nullable = _union(tp)
    problems = []
    if direction == "answer" and schema_nullable and not nullable:
        problems.append(f"{where}: may be null in the document, not in the client")
    if direction == "request" and nullable and not schema_nullable:
        problems.append(f"{where}: the client may send null, which the document does not allow")
    if len(options) != 1:
        return [*problems, f"{where}: expected one type besides None, got {options}"]
    [option] = options
    for value in values:
        problems += _single(option, value, where)
    return problems


def _single(tp: Any, schema: dict[str, Any], where: str) -> list[str]:
    ref = _ref_name(schema)
    if ref is not None and "enum" not in SCHEMAS[ref]:
        schema_name = getattr(tp, "__schema__", None)
        if schema_name != ref:
            return [f"{where}: the document has {ref}, the client {schema_name or tp}"]
        return []
    schema = _resolve(schema)
    origin = typing.get_origin(tp)
    if "enum" in schema:
        if origin is not Literal or set(typing.get_args(tp)) != set(schema["enum"]):
            return [f"{where}: the document's values are {sorted(schema['enum'])}, not {tp}"]
        return []
    kind, form = schema.get("type"), schema.get("format")
    expected: Any
    if kind == "string":
        expected = datetime if form == "date-time" else str
    elif kind == "integer":
        expected = int
    elif kind == "boolean":
        expected = bool
    elif kind == "number":
        expected = float
    elif kind == "array":
        if origin is not tuple:
            return [f"{where}: an array in the document, {tp} in the client"]
        return _single(typing.get_args(tp)[0], schema.get("items", {}), f"{where}[]")
    elif kind == "object" and "properties" not in schema:
        expected = dict[str, Any]
    else:
        return [f"{where}: the test cannot compare {schema}"]
    if tp != expected:
        return [f"{where}: {kind} ({form or 'no format'}) in the document, {tp} in the client"]
    return []


def _request_models() -> set[type[Any]]:
    return {op.body for op in ops.OPERATIONS if op.body is not None}


def _nested(cls: type[Any], seen: set[type[Any]]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for tp in typing.get_type_hints(cls).values():
        for option in _union(tp)[0]:
            inner = typing.get_args(option)[0] if typing.get_origin(option) is tuple else option
            if dataclasses.is_dataclass(inner) and hasattr(inner, "__schema__"):
                _nested(typing.cast(type[Any], inner), seen)


def _answer_models() -> set[type[Any]]:
    seen: set[type[Any]] = set()
    for op in ops.OPERATIONS:
        if op.response is not None:
            _nested(op.response, seen)
    return seen


@pytest.mark.parametrize("cls", sorted(_answer_models(), key=repr))
def test_answer_models_match_their_schemas(cls: type[Any]) -> None:
    assert model_problems(cls, "answer") == []


@pytest.mark.parametrize("cls", sorted(_request_models(), key=repr))
def test_request_models_match_their_schemas(cls: type[Any]) -> None:
    seen: set[type[Any]] = set()
    _nested(cls, seen)
    assert [p for model in seen for p in model_problems(model, "request")] == []


def test_every_model_is_checked() -> None:
    every = {
        value
        for value in vars(models).values()
        if dataclasses.is_dataclass(value) and hasattr(value, "__schema__")
    }
    assert every == _answer_models() | _request_models()


def _media_schema(content: dict[str, Any] | None) -> dict[str, Any] | None:
    if not content or "application/json" not in content:
        return None
    schema: dict[str, Any] = content["application/json"].get("schema", {})
    if "anyOf" in schema:  # an optional body: the model, or null
        [schema] = [a for a in schema["anyOf"] if a.get("type") != "null"]
    return schema


def operation_problems(op: ops.Operation) -> list[str]:
    where = f"{op.method} {op.path}"
    document = SPEC["paths"].get(op.path, {}).get(op.method.lower())
    if document is None:
        return [f"{where}: not in the document"]
    problems = []
    responses = document["responses"]
    if str(op.status) not in responses:
        problems.append(f"{where}: answers {sorted(responses)}, not {op.status}")
    else:
        answer = _media_schema(responses[str(op.status)].get("content"))
        if op.response is None:
            if answer is not None and answer != {}:
                problems.append(f"{where}: the document describes an answer the client ignores")
        elif answer is None:
            problems.append(f"{where}: the document describes no answer")
        elif op.page:
            page = SCHEMAS[_ref_name(answer) or ""]
            item = _ref_name(page["properties"]["data"]["items"])
            if item != op.response.__schema__:
                problems.append(f"{where}: pages of {item}, not {op.response.__schema__}")
        elif _ref_name(answer) != op.response.__schema__:
            problems.append(f"{where}: answers {_ref_name(answer)}, not {op.response.__schema__}")
    body = _media_schema(document.get("requestBody", {}).get("content"))
    expected_body = op.body.__schema__ if op.body is not None else None
    if (_ref_name(body) if body else None) != expected_body:
        problems.append(f"{where}: takes {body}, the client sends {expected_body}")
    parameters = document.get("parameters", [])
    query = {p["name"] for p in parameters if p["in"] == "query"}
    described = DESCRIBED_ONLY.get((op.method, op.path), {})
    for name in op.query:
        if name in described:
            if described[name] not in document.get("description", ""):
                problems.append(f"{where}: {name} is no longer in the description")
        elif name not in query:
            problems.append(f"{where}: no query parameter {name}")
    path_names = {p["name"] for p in parameters if p["in"] == "path"}
    template_names = {part[1:-1] for part in op.path.split("/") if part.startswith("{")}
    if path_names != template_names:
        problems.append(f"{where}: path parameters {path_names}, not {template_names}")
    return problems


@pytest.mark.parametrize("op", ops.OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_operations_exist_as_the_client_calls_them(op: ops.Operation) -> None:
    assert operation_problems(op) == []


# --- The checks catch drift ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _DriftedKey:
    __schema__: ClassVar[str] = "KeyOut"

    id: str
    name: int  # a string in the document
    status: Literal["active", "revoked"]  # the document has "expired" too
    expires_at: datetime  # nullable in the document
    nickname: str  # not in the document


def test_a_drifted_model_is_caught() -> None:
    problems = model_problems(_DriftedKey, "answer")
    assert any(p.startswith("_DriftedKey.name: string") for p in problems)
    assert any(p.startswith("_DriftedKey.status: the document's values") for p in problems)
    assert "_DriftedKey.expires_at: may be null in the document, not in the client" in problems
    assert "_DriftedKey.nickname: not a member of KeyOut" in problems
    assert "_DriftedKey: lacks KeyOut's required hint" in problems


def test_a_drifted_operation_is_caught() -> None:
    moved = ops.Operation("GET", "/v1/key/{key_id}", models.Key)
    assert operation_problems(moved) == ["GET /v1/key/{key_id}: not in the document"]
    renamed = ops.Operation("GET", "/v1/keys", models.Key, page=True, query=("state",))
    assert operation_problems(renamed) == ["GET /v1/keys: no query parameter state"]
    wrong_body = ops.Operation("PATCH", "/v1/keys/{key_id}", models.Key, body=models.KeyRotate)
    assert operation_problems(wrong_body) == [
        "PATCH /v1/keys/{key_id}: takes {'$ref': '#/components/schemas/KeyUpdate'}, "
        "the client sends KeyRotate"
    ]

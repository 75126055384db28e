"""The README's quick start, taken from the README itself and replayed against keyservice: its
commands work in the order given, and the verify example shows what the quick start's key gets."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_tenant
from servers import REPOSITORY

README = (REPOSITORY / "README.md").read_text()
BASE = "http://127.0.0.1:8000"


def _section_block(heading: str, language: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block under {heading!r}"
    return match.group(1)


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # a quotation still open on the next line
        return False
    return True


def _commands(block: str) -> list[str]:
    """The block's commands, continued lines joined, comments and outputs left out."""
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        pending += line
        if _complete(pending):
            commands.append(pending)
            pending = ""
        else:
            pending += "\n"
    assert not pending, pending
    return commands


def _request(command: str, variables: dict[str, str]) -> httpx.Request:
    for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
        command = command.replace(f"${name}", value)
    args = shlex.split(command, comments=True)
    assert args[0] == "curl", command
    method, url, headers, body = None, None, {}, None
    words = iter(args[1:])
    for word in words:
        if word == "-s":
            continue
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, value = next(words).split(":", 1)
            headers[name] = value.strip()
        elif word == "-d":
            body = next(words)
        else:
            url = word
    assert url is not None, command
    assert url.startswith(BASE), command
    method = method or ("POST" if body is not None else "GET")
    return httpx.Request(method, url[len(BASE) :], headers=headers, content=body)


async def test_the_quick_start_runs_as_written(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    variables: dict[str, str] = {}
    answers: list[dict[str, Any]] = []
    steps: list[tuple[str, str]] = []
    verified: dict[str, Any] = {}
    for command in _commands(_section_block("### A first application and key", "sh")):
        assignment = re.fullmatch(r"(\w+)=(\S+)\s*(#.*)?", command)
        if assignment:
            # KEY: the owner key make run printed; then what the last answer returned.
            name, placeholder = assignment.group(1), assignment.group(2)
            if not answers:
                variables[name] = tenant.owner_key
            else:
                variables[name] = answers[-1]["key" if placeholder.startswith("ks_") else "id"]
            continue
        request = _request(command, variables)
        response = await client.request(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            content=request.content,
        )
        assert response.is_success, (command, response.text)
        path = re.sub(r"[0-9a-f-]{36}", "{id}", str(request.url))
        steps.append((request.method, path))
        if path in ("/v1/applications", "/v1/applications/{id}/keys"):
            answers.append(response.json())  # what the next assignments take their value from
        elif path == "/v1/verify":
            verified = response.json()
        elif path.endswith("/revoke"):
            assert response.json()["status"] == "revoked"

    assert steps == [
        ("POST", "/v1/applications"),
        ("POST", "/v1/applications/{id}/keys"),
        ("POST", "/v1/verify"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys/{id}/revoke"),
    ]
    assert variables["KEY"] == tenant.owner_key
    assert verified["valid"] is True

    # The verify example further down is the same command, and shows the same answer.
    [example] = _commands(_section_block("### Verifying keys from your services", "sh"))
    assert example in _commands(_section_block("### A first application and key", "sh"))
    shown = json.loads(_section_block("### Verifying keys from your services", "json"))
    assert shown.keys() == verified.keys()
    assert shown["key"].keys() == verified["key"].keys()
    for field in ("name", "kind", "environment", "scopes", "user_id", "role", "rotated"):
        assert shown["key"][field] == verified["key"][field], field
    assert (shown["key"]["expires_at"] is None) == (verified["key"]["expires_at"] is None)

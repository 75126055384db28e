"""The README's ten-line downstream service, taken from the README itself, in front of the real
keyservice."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from keyservice_client import AsyncKeyservice
from tests.support import Server, new_key

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _service_code() -> str:
    section = README.split("## A downstream service in ten lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's downstream service is missing"
    return match.group(1)


def test_the_service_is_ten_lines() -> None:
    assert len(_service_code().strip().splitlines()) <= 10


async def test_the_readme_service_guards_its_route(server: Server, owner: AsyncKeyservice) -> None:
    code = _service_code()
    assert '"http://127.0.0.1:8000"' in code
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("http://127.0.0.1:8000", server.url), "README.md", "exec"), namespace)
    created = await new_key(owner, "contacts:read")
    transport = httpx.ASGITransport(app=namespace["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://downstream.test") as client:
        allowed = await client.get("/contacts", headers={"Authorization": f"Bearer {created.key}"})
        refused = await client.get("/contacts")
    assert allowed.status_code == 200
    assert allowed.json() == {
        "account": (await owner.account.get()).id,
        "application": created.application_id,
    }
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"

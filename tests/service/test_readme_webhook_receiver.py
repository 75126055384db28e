"""The README's receiver example, taken from the README itself, run with uvicorn and sent real
deliveries: it accepts keyservice's, and refuses a forged one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession

from factories import create_application, create_endpoint, create_key, create_tenant
from keyservice.webhooks.delivery import Delivery
from servers import REPOSITORY, free_port

README = (REPOSITORY / "README.md").read_text()
SECTION = "## For integrators: receiving keyservice's webhooks"


def _example() -> str:
    section = README.split(SECTION, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_receiver_verifies_keyservices_deliveries(
    client: httpx.AsyncClient,
    session: AsyncSession,
    delivery: Delivery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = await create_tenant(session)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/keyservice"
    endpoint = await create_endpoint(client, tenant, url, event_types=["key.revoked"])
    monkeypatch.setenv("KEYSERVICE_WEBHOOK_SECRET", endpoint["secret"])
    namespace: dict[str, Any] = {}
    exec(compile(_example(), "README.md", "exec"), namespace)
    server = uvicorn.Server(
        uvicorn.Config(namespace["app"], host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done()
            await asyncio.sleep(0.01)

        # The tester's sample, and a real event through the worker.
        response = await client.post(
            f"/v1/webhooks/endpoints/{endpoint['id']}/test",
            headers=tenant.headers,
            json={"event_type": "key.revoked"},
        )
        assert (response.json()["status_code"], response.json()["success"]) == (200, True)
        application = await create_application(client, tenant)
        key = await create_key(client, tenant, application["id"])
        await client.post(f"/v1/keys/{key['id']}/revoke", headers=tenant.headers)
        assert await delivery.run_once() == 1
        [message] = (
            await client.get(
                f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries", headers=tenant.headers
            )
        ).json()["data"]
        assert message["status"] == "delivered"
        assert len(namespace["handled"]) == 2

        # A delivery signed with another secret is refused.
        sent = response.json()["request"]
        forged = dict(sent["headers"], **{"webhook-signature": "v1,bm90IHRoZSBzaWduYXR1cmU="})
        async with httpx.AsyncClient() as outsider:
            refused = await outsider.post(url, content=sent["body"], headers=forged)
        assert refused.status_code == 400
    finally:
        server.should_exit = True
        await serving

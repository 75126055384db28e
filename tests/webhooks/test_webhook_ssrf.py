"""The SSRF guard: in production a webhook URL is https and reaches public addresses only,
checked on the names' real resolution; development, or an allowed network, lets a local receiver
in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from conftest import client_for
from factories import create_tenant
from keyservice.config import Mode, Settings
from keyservice.webhooks.ssrf import Policy, Refused

PRODUCTION = Settings(_env_file=None, mode=Mode.development).model_copy(
    update={"mode": Mode.production}
)


async def _internal_names(host: str, port: int) -> Sequence[str]:
    """A resolver for names of an internal zone, as a company's DNS would answer them."""
    return {
        "intranet.corp.example": ["10.1.2.3"],
        "mixed.corp.example": ["93.184.215.14", "192.168.0.10"],
        "public.example": ["93.184.215.14"],
    }[host]


def _production(**overrides: Any) -> Policy:
    return Policy.of(PRODUCTION.model_copy(update=overrides), resolver=_internal_names)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://public.example/hook", "invalid_url"),
        ("https://127.0.0.1/hook", "forbidden_address"),
        ("https://localhost:8443/hook", "forbidden_address"),
        ("https://[::1]/hook", "forbidden_address"),
        ("https://[::ffff:127.0.0.1]/hook", "forbidden_address"),
        ("https://10.0.0.7/hook", "forbidden_address"),
        ("https://169.254.169.254/latest/meta-data/", "forbidden_address"),
        ("https://100.64.0.1/hook", "forbidden_address"),
        ("https://0.0.0.0/hook", "forbidden_address"),
        ("https://intranet.corp.example/hook", "forbidden_address"),
        ("https://mixed.corp.example/hook", "forbidden_address"),
        ("https://user:password@public.example/hook", "invalid_url"),
        ("ftp://public.example/hook", "invalid_url"),
        ("https://no-such-host.invalid/hook", "dns"),
        ("https://a..b/hook", "invalid_url"),
    ],
)
async def test_production_refuses_what_is_not_a_public_https_url(url: str, kind: str) -> None:
    policy = Policy.of(PRODUCTION) if "localhost" in url or ".invalid" in url else _production()
    with pytest.raises(Refused) as refused:
        await policy.check(url)
    assert refused.value.kind == kind


async def test_production_accepts_a_public_https_url_and_pins_its_address() -> None:
    target = await _production().check("https://public.example/hook")
    assert target.address == "93.184.215.14"
    assert target.host == "public.example"


async def test_an_allowed_network_lets_a_local_receiver_in_over_http() -> None:
    policy = _production(webhook_allowed_networks=("127.0.0.0/8", "10.1.0.0/16"))
    assert (await policy.check("http://127.0.0.1:9000/hook")).address == "127.0.0.1"
    assert (await policy.check("http://intranet.corp.example/hook")).address == "10.1.2.3"
    with pytest.raises(Refused):
        await policy.check("http://10.2.0.1/hook")  # outside the allowed networks


async def test_development_lets_every_address_in() -> None:
    policy = Policy.of(Settings(_env_file=None, mode=Mode.development))
    for url in ("http://localhost:9000/hook", "http://10.0.0.7/hook", "http://[::1]/hook"):
        assert (await policy.check(url)).url == url
    with pytest.raises(Refused):
        await policy.check("http://user:pw@localhost/hook")


async def test_the_api_refuses_a_forbidden_url_in_production_and_writes_nothing(
    make_app: Any, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    app = make_app(mode=Mode.production)
    async with client_for(app) as client:
        for url in ("http://localhost:9000/hook", "https://localhost/hook"):
            response = await client.post(
                "/v1/webhooks/endpoints", headers=tenant.headers, json={"url": url}
            )
            assert response.status_code == 422, response.text
            problem = response.json()
            assert problem["type"] == "urn:keyservice:problem:invalid-webhook-url"
            assert problem["field"] == "url"
        listed = await client.get("/v1/webhooks/endpoints", headers=tenant.headers)
        assert listed.json()["data"] == []


async def test_development_registers_a_local_receiver(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    tenant = await create_tenant(session)
    response = await client.post(
        "/v1/webhooks/endpoints", headers=tenant.headers, json={"url": "http://localhost:9000/"}
    )
    assert response.status_code == 201, response.text


async def test_development_refuses_a_host_that_is_no_host_name_too() -> None:
    # It allows every address, but a name no resolver takes once reached the sender and failed
    # the worker instead of its attempt.
    with pytest.raises(Refused) as refused:
        await Policy(allow_all=True).check("http://a..b/hook")
    assert refused.value.kind == "invalid_url"

"""The production topology of deploy/, without containers: two ``keyservice serve`` instances on
one PostgreSQL, behind a real nginx running deploy/nginx.conf, forward-auth guarding a sample
upstream. A key revoked through one instance is refused through the proxy within a second; the
instances' /readyz fails while the database is unreachable, and recovers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from keyservice import migrate, secretbox
from keyservice.config import Settings
from pgcluster import Cluster
from servers import KEY_RE, NGINX, REPOSITORY, free_port, serving

DEPLOY = REPOSITORY / "deploy"

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _env(cluster: Cluster) -> dict[str, str]:
    """deploy/keyservice.env, with this machine's database in place of the compose network's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSERVICE_")}
    for line in (DEPLOY / "keyservice.env").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    env["KEYSERVICE_DATABASE_URL"] = cluster.url
    env["KEYSERVICE_FORWARDED_ALLOW_IPS"] = "127.0.0.1"
    env["KEYSERVICE_LOG_FORMAT"] = "text"
    env["KEYSERVICE_ENCRYPTION_KEY"] = secretbox.new_key()
    return env


@pytest.fixture
def upstream() -> Iterator[int]:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()


def _nginx(
    directory: Path, instances: list[str], upstream: int
) -> tuple[subprocess.Popen[bytes], str]:
    """deploy/nginx.conf, its hosts replaced by this machine's ports, in a main configuration."""
    port = free_port()
    server = (DEPLOY / "nginx.conf").read_text()
    server = server.replace("server keyservice-1:8000;", f"server {instances[0]};")
    server = server.replace("server keyservice-2:8000;", f"server {instances[1]};")
    server = server.replace("server upstream:8080;", f"server 127.0.0.1:{upstream};")
    server = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", server)
    config = directory / "nginx-main.conf"
    config.write_text(
        f"""
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log;
daemon off;
events {{}}
http {{
    access_log off;
    client_body_temp_path {directory};
    proxy_temp_path {directory};
    {server}
}}
"""
    )
    nginx = subprocess.Popen([str(NGINX), "-c", str(config), "-p", str(directory)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(f"{base}/v1/scopes", timeout=1)
            return nginx, base
        except httpx.TransportError:
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)


def test_two_instances_behind_nginx(
    cluster: Cluster, upstream: int, tmp_path: Path, settings: Settings
) -> None:
    env = _env(cluster)
    asyncio.run(migrate.upgrade(settings, cluster.url))  # `keyservice migrate`, its own command
    bootstrap = subprocess.run(
        [sys.executable, "-m", "keyservice", "bootstrap", "--email", "ops@example.com"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [owner_key] = KEY_RE.findall(bootstrap.stdout)[:1]
    owner = {"Authorization": f"Bearer {owner_key}"}
    with serving(tmp_path, env) as first, serving(tmp_path, env) as second:
        instances = [
            first.base_url.removeprefix("http://"),
            second.base_url.removeprefix("http://"),
        ]
        nginx, proxy = _nginx(tmp_path, instances, upstream)
        try:
            application = httpx.post(
                f"{proxy}/v1/applications",
                headers=owner,
                json={
                    "name": "Zap",
                    "developer_email": "dev@example.com",
                    "permissions": ["contacts:read"],
                },
            ).json()
            created = httpx.post(
                f"{proxy}/v1/applications/{application['id']}/keys",
                headers=owner,
                json={"name": "Production", "scopes": ["contacts:read"]},
            ).json()
            client = {"Authorization": f"Bearer {created['key']}"}
            # Both instances answer (round robin), and both cache the key.
            for _ in range(6):
                allowed = httpx.get(f"{proxy}/api/contacts/1", headers=client)
                assert allowed.status_code == 200
                assert allowed.json()["x-keyservice-key-id"] == created["id"]

            revoked = httpx.post(f"{first.base_url}/v1/keys/{created['id']}/revoke", headers=owner)
            assert revoked.status_code == 200
            started = time.monotonic()
            # Refused by every instance: several answers in a row, not just the first.
            in_a_row = 0
            while in_a_row < 6:
                status = httpx.get(f"{proxy}/api/contacts/1", headers=client).status_code
                in_a_row = in_a_row + 1 if status == 401 else 0
                assert time.monotonic() - started < 1.0, "a revoked key still passes the proxy"

            cluster.stop()
            for instance in (first, second):
                ready = httpx.get(f"{instance.base_url}/readyz")
                assert ready.status_code == 503
                assert "unreachable" in ready.json()["detail"]
            cluster.start()
            deadline = time.monotonic() + 15
            for instance in (first, second):
                while httpx.get(f"{instance.base_url}/readyz").status_code != 200:
                    assert time.monotonic() < deadline, "an instance did not recover"
                    time.sleep(0.1)
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)

"""The README's nginx snippet, taken from the README itself, in front of a real keyservice."""

from __future__ import annotations

import json
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

from servers import KEY_RE, NGINX, REPOSITORY, cli_env, free_port

README = REPOSITORY / "README.md"

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)


class _EchoKeyserviceHeaders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        seen = {
            k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-keyservice")
        }
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _snippet() -> str:
    match = re.search(r"nginx \(`auth_request`\):\n\n```nginx\n(.*?)```", README.read_text(), re.S)
    assert match, "the README's nginx snippet is missing"
    return match.group(1)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    keyservice_port, backend_port, nginx_port = free_port(), free_port(), free_port()
    backend = ThreadingHTTPServer(("127.0.0.1", backend_port), _EchoKeyserviceHeaders)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    log = tmp_path / "keyservice.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "serve", "--port", str(keyservice_port)],
            env=cli_env(tmp_path),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    config = tmp_path / "nginx.conf"
    locations = _snippet().replace("127.0.0.1:8000", f"127.0.0.1:{keyservice_port}")
    config.write_text(
        f"""
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log;
daemon off;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path};
    proxy_temp_path {tmp_path};
    upstream backend {{ server 127.0.0.1:{backend_port}; }}
    server {{
        listen 127.0.0.1:{nginx_port};
        {locations}
    }}
}}
"""
    )
    nginx = subprocess.Popen([str(NGINX), "-c", str(config), "-p", str(tmp_path)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{keyservice_port}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        [owner_key] = KEY_RE.findall(log.read_text().split("Try it")[0])
        yield f"http://127.0.0.1:{keyservice_port}", f"http://127.0.0.1:{nginx_port}", owner_key
    finally:
        nginx.terminate()
        server.terminate()
        backend.shutdown()
        nginx.wait(timeout=10)
        server.wait(timeout=10)


def test_nginx_auth_request_snippet(stack: tuple[str, str, str]) -> None:
    keyservice, proxy, owner_key = stack
    owner = {"Authorization": f"Bearer {owner_key}"}
    application = httpx.post(
        f"{keyservice}/v1/applications",
        headers=owner,
        json={
            "name": "Zap",
            "developer_email": "dev@example.com",
            "permissions": ["contacts:read", "deals:read"],
        },
    ).json()

    def issue(scope: str) -> dict[str, str]:
        created = httpx.post(
            f"{keyservice}/v1/applications/{application['id']}/keys",
            headers=owner,
            json={"name": scope, "scopes": [scope]},
        ).json()
        return {"id": created["id"], "key": created["key"]}

    contacts, deals = issue("contacts:read"), issue("deals:read")
    response = httpx.get(
        f"{proxy}/api/contacts/1",
        headers={"Authorization": f"Bearer {contacts['key']}", "X-Keyservice-Key-Id": "forged"},
    )
    # The upstream sees keyservice's answer, not the client's forged header.
    assert response.status_code == 200
    assert response.json() == {
        "x-keyservice-key-id": contacts["id"],
        "x-keyservice-account-id": response.json()["x-keyservice-account-id"],
        "x-keyservice-scopes": "contacts:read",
    }
    assert (
        httpx.get(f"{proxy}/api/contacts/1", headers={"x-api-key": deals["key"]}).status_code == 403
    )
    assert httpx.get(f"{proxy}/api/contacts/1").status_code == 401
    assert httpx.get(f"{proxy}/api/contacts/1", headers={"x-api-key": "junk"}).status_code == 401

"""Helpers of the client's tests: the keyservice server under test, objects created through the
client, and ``Scripted``, a small HTTP server on a loopback port that answers what each test
scripts. It stands for a remote server in trouble (a 502 in front of keyservice, a dropped
connection, a database down), never for keyservice's answers to the calls under test."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from keyservice_client import AsyncKeyservice, Retry
from keyservice_client.models import Application, CreatedKey

KEY_RE = re.compile(r"ks_live_[0-9A-Za-z]{38}")
# Quick retries: the tests count attempts, they do not time them.
FAST_RETRY = Retry(attempts=3, backoff=0.001, max_delay=0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    owner_key: str
    env: dict[str, str]
    directory: Path

    def command(self, *args: str) -> str:
        """A ``keyservice`` command on the server's database; its standard output."""
        return subprocess.run(
            [sys.executable, "-m", "keyservice", *args],
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    def new_account(self, email: str) -> str:
        """Another account, with its own owner (``email``); its owner key."""
        output = self.command("bootstrap", "--email", email, "--account-name", email)
        match = KEY_RE.search(output)
        assert match is not None, "bootstrap printed no key"
        return match.group()


@dataclass(frozen=True)
class TwoAccounts:
    """A user who owns two accounts, and one of their keys, which reaches both."""

    email: str
    key: str
    account_ids: tuple[str, str]


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:8]}"


async def new_application(client: AsyncKeyservice, *permissions: str) -> Application:
    return await client.applications.create(
        name=unique("Test app"),
        developer_email="dev@partner.example",
        permissions=permissions or ("contacts:read", "contacts:write", "deals:read"),
    )


async def new_key(
    client: AsyncKeyservice, *scopes: str, application: Application | None = None, **options: Any
) -> CreatedKey:
    application = application or await new_application(client)
    return await client.keys.create(
        application.id,
        name=unique("Test key"),
        scopes=scopes or ("contacts:read",),
        **options,
    )


# --- A scripted remote server ----------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Scripted:
    """Answers each request with the next scripted ``Answer`` (200 ``{}`` when none is left) and
    records what it received."""

    def __init__(self) -> None:
        self.answers: deque[Answer] = deque()
        self.received: list[Received] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                scripted.received.append(
                    Received(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        self.rfile.read(length),
                    )
                )
                answer = scripted.answers.popleft() if scripted.answers else Answer(body={})
                if answer.drop:
                    self.close_connection = True
                    return
                body = json.dumps(answer.body).encode() if answer.body is not None else b""
                self.send_response(answer.status)
                headers = {"content-type": "application/json", **answer.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

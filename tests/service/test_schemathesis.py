"""schemathesis over the committed OpenAPI document, against a real server: every check, on every
operation, a bounded number of examples each. What the document says must be what the server
does: no 5xx, no undocumented status, header or body, no valid request refused, no invalid one
accepted. The exclusions below are the answers no OpenAPI document can describe, each with why."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from servers import KEY_RE, REPOSITORY, cli_env, free_port

DOCUMENT = REPOSITORY / "openapi" / "openapi.json"
# Bounded so that the suite stays quick; raise them to look further (a seed repeats a run).
EXAMPLES_PER_OPERATION = int(os.environ.get("KEYSERVICE_TEST_FUZZ_EXAMPLES", "15"))
SEED = int(os.environ.get("KEYSERVICE_TEST_FUZZ_SEED", "20260101"))

# The operations that can end or narrow the caller's own key (revoke, rotate or narrow it, demote
# or remove its user, end its session): they run after all the others, on resources of their own.
LAST = re.compile(
    r"^(POST /v1/(users/me/)?keys/\{key_id\}/(revoke|rotate)"
    r"|PATCH /v1/(users/me/)?keys/\{key_id\}"
    r"|(PATCH|DELETE) /v1/account/members/\{user_id\}"
    r"|DELETE /v1/sessions/current)$"
)


@dataclass(frozen=True)
class Failure:
    check: str
    operation: str
    title: str
    message: str
    request: str
    status: int | None
    body: str

    def __str__(self) -> str:
        return (
            f"{self.operation}: {self.check} ({self.title}) {self.message!r}\n"
            f"    {self.request} -> {self.status} {self.body[:300]}"
        )


@dataclass(frozen=True)
class Exclusion:
    check: str
    status: int
    body: re.Pattern[str]
    reason: str

    def covers(self, failure: Failure) -> bool:
        return (
            failure.check == self.check
            and failure.status == self.status
            and self.body.search(failure.body) is not None
        )


def _problem(slug: str, detail: str = "") -> re.Pattern[str]:
    return re.compile(rf'"type":"urn:keyservice:problem:{slug}".*"detail":"[^"]*(?:{detail})')


def _refused(reason: str, slug: str, detail: str = "") -> Exclusion:
    return Exclusion("positive_data_acceptance", 422, _problem(slug, detail), reason)


# A request that the schema allows, refused with 422 by a rule that JSON Schema cannot state: one
# about the server's state or configuration, or between two values.
EXCLUSIONS = [
    _refused("a cursor is an opaque token the server made", "validation-error", "cursor"),
    _refused("scopes are the deployment's catalogue, within the grantor's", "invalid-scope"),
    _refused("an expiry is in the future, and one of two fields", "validation-error", "expires_"),
    _refused(
        "a usage range runs forward over a bounded span", "validation-error", "`start`|points"
    ),
    _refused("email-validator refuses reserved domains (.test)", "validation-error", "special-use"),
    _refused("event types are the catalogue's, which the server holds", "unknown-event-type"),
    _refused("a webhook URL must be one that can be sent to", "invalid-webhook-url"),
    Exclusion(
        "positive_data_acceptance",
        422,
        re.compile(r'"instance":"[^"]*/None\b'),
        "schemathesis put a response's null (a personal key's application_id) in a path",
    ),
]


@dataclass
class Run:
    failures: list[Failure]
    errors: list[str]
    operations: int = 0
    tested: int = 0


def _parse_report(report: Path) -> Run:
    failures: dict[tuple[str, str, str, int | None, str], Failure] = {}
    run = Run(failures=[], errors=[])
    for line in report.read_text().splitlines():
        event = json.loads(line)
        kind = next(iter(event))
        if "Error" in kind:
            run.errors.append(line[:2000])
        if kind == "LoadingFinished":
            operations = event[kind]["statistic"]["operations"]
            run.operations, run.tested = operations["total"], operations["selected"]
        if kind != "ScenarioFinished":
            continue
        recorder = event[kind]["recorder"]
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] == "success":
                    continue
                info = check["failure_info"]["failure"]
                interaction = recorder.get("interactions", {}).get(case_id) or {}
                request, response = interaction.get("request", {}), interaction.get("response")
                content = (response or {}).get("content") or {}
                body = base64.b64decode(content.get("$base64", "")).decode(errors="replace")
                failure = Failure(
                    check=check["name"],
                    operation=info.get("operation") or recorder["label"],
                    title=info.get("title", ""),
                    message=info.get("message", ""),
                    request=f"{request.get('method')} {request.get('uri')}",
                    status=response["status_code"] if response else None,
                    body=body,
                )
                key = (failure.check, failure.operation, failure.title, failure.status, body[:200])
                failures.setdefault(key, failure)
    run.failures = list(failures.values())
    return run


class Server:
    def __init__(self, base_url: str, owner_key: str) -> None:
        self.base_url = base_url
        self.owner_key = owner_key

    def call(self, method: str, path: str, body: object = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.owner_key}"}
        return httpx.request(method, f"{self.base_url}{path}", headers=headers, json=body)


@pytest.fixture
def server(fresh_database_url: str, tmp_path: Path) -> Iterator[Server]:
    env = cli_env(tmp_path) | {
        "KEYSERVICE_DATABASE_URL": fresh_database_url,
        # The fuzzer sends a great many bad keys from one address: with the failure throttle on,
        # everything after the first minute would be a 429. The throttle has tests of its own.
        "KEYSERVICE_VERIFY_FAILURES_PER_MINUTE": "0",
    }
    subprocess.run(
        [sys.executable, "-m", "keyservice", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=True,
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyservice", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        [owner_key] = KEY_RE.findall(log.read_text().split("Try it")[0])
        yield Server(base_url, owner_key)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


def _schemathesis(
    server: Server, tmp_path: Path, name: str, *options: str, config: str = ""
) -> Run:
    report = tmp_path / f"{name}.ndjson"
    config_file = tmp_path / f"{name}.toml"
    config_file.write_text(config)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_file),
        "--no-color",
        "run",
        str(DOCUMENT),
        "--url",
        server.base_url,
        "--header",
        f"Authorization: Bearer {server.owner_key}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        *options,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    process = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = process.stdout[-5000:] + process.stderr
    assert report.exists(), output
    run = _parse_report(report)
    assert not run.errors, "\n".join(run.errors)
    assert "EngineFinished" in report.read_text(), output
    return run


def test_the_server_does_what_the_document_says(server: Server, tmp_path: Path) -> None:
    # The last operations act on a key and a member of their own, and end a session of their own
    # (made first: the fuzzer's wrong passwords soon get logins from its address throttled).
    email = f"last-{uuid.uuid4().hex[:8]}@example.com"
    victim_key = server.call("POST", "/v1/users/me/keys", {"name": "victim", "scopes": []})
    assert victim_key.status_code == 201, victim_key.text
    member = server.call(
        "POST",
        "/v1/account/members",
        {"email": email, "role": "member", "password": "a long password"},
    )
    assert member.status_code == 201, member.text
    login = httpx.post(
        f"{server.base_url}/v1/sessions", json={"email": email, "password": "a long password"}
    )
    assert login.status_code == 201, login.text

    first = _schemathesis(server, tmp_path, "first", "--exclude-name-regex", LAST.pattern)
    # Nothing above ended the key that everything runs with.
    assert server.call("GET", "/v1/users/me").status_code == 200

    config = f"""
[parameters]
"path.key_id" = "{victim_key.json()["id"]}"
"path.user_id" = "{member.json()["user_id"]}"

[[operations]]
include-name = "DELETE /v1/sessions/current"
headers = {{ Authorization = "Bearer {login.json()["key"]}" }}
"""
    last = _schemathesis(
        server, tmp_path, "last", "--include-name-regex", LAST.pattern, config=config
    )

    # Every operation of the document ran, in one run or the other.
    assert first.tested + last.tested == first.operations
    assert last.tested == 9
    failures = first.failures + last.failures
    remaining = [f for f in failures if not any(e.covers(f) for e in EXCLUSIONS)]
    assert not remaining, f"{len(remaining)} failures:\n" + "\n".join(map(str, remaining))

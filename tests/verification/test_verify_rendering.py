"""/verify's VALID answer is rendered from parts, the key's part kept with its record: the bytes
must be those of the documented model, whatever the key, account, secret and limits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from factories import key_record
from keyservice.models import KeyKind, Role
from keyservice.ratelimit.limiter import Decision
from keyservice.ratelimit.policy import Limits, RatePolicy
from keyservice.verification.rendering import (
    Answer,
    rate_limit_state,
    valid,
    verified_key,
)
from keyservice.verification.schemas import VerifyCode, VerifyResponse
from keyservice.verification.service import NO_LIMITS, Principal, Verified

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _expected(verified: Verified) -> bytes:
    return (
        VerifyResponse(
            valid=True,
            code=VerifyCode.VALID,
            key=verified_key(verified),
            rate_limit=rate_limit_state(verified.decision) if verified.decision else None,
        )
        .model_dump_json()
        .encode()
    )


LIMITS = Limits(rate=RatePolicy(limit=100, period_seconds=60, burst=20), monthly_quota=5000)
DECISIONS = [
    None,
    Decision(limits=LIMITS, remaining=19, reset_seconds=1, quota_remaining=4999,
             quota_reset_seconds=86_400),
    Decision(limits=Limits(rate=None, monthly_quota=10), quota_remaining=0,
             quota_reset_seconds=3),
    Decision(limits=Limits(rate=RatePolicy(limit=5, period_seconds=1, burst=5),
                           monthly_quota=None), remaining=0, reset_seconds=1),
]  # fmt: skip


@pytest.mark.parametrize("decision", DECISIONS)
def test_an_application_keys_answer_is_the_models(decision: Decision | None) -> None:
    record = key_record(
        name='Production "integration" é',
        scopes=frozenset({"deals:read", "contacts:read"}),
        expires_at=NOW + timedelta(days=90),
        previous_hash="b" * 64,
        previous_expires_at=NOW + timedelta(hours=1, microseconds=5),
        limits=decision.limits if decision else NO_LIMITS,
    )
    assert record.account_id is not None
    principal = Principal(key=record, account_id=record.account_id, role=None, scopes=record.scopes)
    for grace in (False, True, False):
        verified = Verified(principal=principal, grace=grace, decision=decision)
        # The first time renders the key's part, the next ones reuse it.
        assert valid(verified).content == _expected(verified)
        assert valid(verified).content == _expected(verified)


def test_a_personal_keys_answer_is_per_account() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    record = key_record(
        kind=KeyKind.personal,
        account_id=None,
        application_id=None,
        user_id=uuid.uuid4(),
        roles={first: Role.owner, second: Role.member},
        account_scopes={
            first: frozenset({"contacts:read", "contacts:write"}),
            second: frozenset({"contacts:read"}),
        },
    )
    answers = set()
    for account_id, role in record.roles.items():
        principal = Principal(
            key=record,
            account_id=account_id,
            role=role,
            scopes=record.account_scopes[account_id],
        )
        verified = Verified(principal=principal, grace=False)
        answers.add(valid(verified).content)
        assert valid(verified).content == _expected(verified)
    assert len(answers) == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"RateLimit-Policy": '"rate";q=5;w=1', "X-RateLimit-Limit": "5", "Retry-After": "1"}],
)
def test_the_fast_path_sends_the_headers_the_route_sends(headers: dict[str, str]) -> None:
    """The fast path sends an answer's ASGI messages itself: the headers must be the Response's
    that the documented route returns, in the same order."""
    answer = Answer(b'{"valid":true}', headers)
    assert answer.raw_headers() == answer.response().raw_headers


def test_a_limited_keys_headers_and_answer_say_the_same() -> None:
    """The headers and the JSON come from one reading of the limiter's decision."""
    decision = DECISIONS[1]
    assert decision is not None
    record = key_record(limits=decision.limits)
    assert record.account_id is not None
    principal = Principal(key=record, account_id=record.account_id, role=None, scopes=record.scopes)
    answer = valid(Verified(principal=principal, grace=False, decision=decision))
    state = VerifyResponse.model_validate_json(answer.content).rate_limit
    assert state is not None
    assert answer.headers["X-RateLimit-Remaining"] == str(state.remaining)
    assert answer.headers["RateLimit"] == (
        f'"rate";r={state.remaining};t={state.reset_seconds}, '
        f'"month";r={state.quota_remaining};t={state.quota_reset_seconds}'
    )

"""``POST /v1/verify``'s answer, for its route and for its fast path alike: who the caller is,
which key to check and for what, and the verdict, rendered by ``rendering``."""

from __future__ import annotations

from starlette.datastructures import Headers

from keyservice import metrics
from keyservice.errors import (
    DatabaseUnavailable,
    KeyServiceError,
    MissingKey,
    OverLimit,
    UnknownKey,
    ValidationFailed,
)
from keyservice.verification import rendering
from keyservice.verification.dependency import key_from_headers
from keyservice.verification.rendering import Answer
from keyservice.verification.schemas import VerifyRequest
from keyservice.verification.verifier import Verifier

VERIFY_SCOPE = "keyservice:verify"


async def answer(
    verifier: Verifier, body: VerifyRequest, headers: Headers, peer: str | None
) -> Answer:
    try:
        result = await _answer(verifier, body, headers, peer)
    except DatabaseUnavailable as error:
        result = rendering.refused(error)
    metrics.verification("verify", result.code)
    return result


async def _answer(
    verifier: Verifier, body: VerifyRequest, headers: Headers, peer: str | None
) -> Answer:
    header_key = key_from_headers(headers)
    # Failed guesses are throttled per client address: the connection's (or, behind a trusted
    # proxy, the address it forwards), unless an authenticated caller names its own client's.
    # An anonymous caller's `client_address` counts for nothing: it could have any address
    # blocked, or name a new one for each guess and never be throttled.
    address = peer
    account_id = body.account_id
    authenticated = False
    if (body.key is not None and header_key is not None) or verifier.settings.verify_requires_auth:
        if header_key is None:
            raise MissingKey("Callers of /v1/verify must send their own key (keyservice:verify)")
        if body.key is None:
            raise ValidationFailed("Send the key to verify in the body's `key`")
        caller = await verifier.verify(
            header_key,
            scopes=[VERIFY_SCOPE],
            client_address=peer,
            endpoint="POST /v1/verify",
        )
        # An authenticated caller only learns about keys of its own account.
        if account_id is not None and account_id != caller.principal.account_id:
            return rendering.refused(UnknownKey())
        account_id = caller.principal.account_id
        authenticated = True
        if body.client_address is not None:
            address = str(body.client_address)
        key = body.key
    elif body.key is not None:
        key = body.key
    elif header_key is not None:
        key = header_key
    else:
        raise ValidationFailed("No key to verify: send it in `key` or in a key header")
    try:
        verified = await verifier.verify(
            key,
            scopes=body.scopes,
            account_id=account_id,
            client_address=address,
            endpoint=body.endpoint,
            cost=body.cost,
            confined=authenticated,
        )
    except OverLimit as error:
        return rendering.refused(error, error.decision)
    except KeyServiceError as error:
        if error.code is None or isinstance(error, DatabaseUnavailable):
            raise
        return rendering.refused(error)
    return rendering.valid(verified)

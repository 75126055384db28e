"""``AsyncKeyservice`` and ``Keyservice``: the same API, async and sync.

Both send the calls of ``_operations`` (one builder per route, written once) and differ only in
how they wait. Methods are grouped by resource: ``client.applications.create(...)``,
``client.keys.iterate(...)``, ``client.verify(key, scopes=[...])``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

import httpx

from keyservice_client import _http
from keyservice_client import _operations as ops
from keyservice_client._http import DEFAULT_LIMITS, DEFAULT_TIMEOUT, Retry
from keyservice_client._operations import Call, Operation
from keyservice_client.cache import VerifyCache
from keyservice_client.models import Page, Verdict, to_json

P = ParamSpec("P")
T = TypeVar("T")


class _AsyncCaller(Protocol):
    async def _execute(self, call: Call[T]) -> T: ...


class _SyncCaller(Protocol):
    def _execute(self, call: Call[T]) -> T: ...


def _signature(build: Callable[..., Any], returns: str) -> inspect.Signature:
    """``build``'s signature as a method's (for ``help()`` and editors): ``self`` first, and the
    answer's type instead of the ``Call``'s."""
    signature = inspect.signature(build)
    answer = str(signature.return_annotation).removeprefix("Call[").removesuffix("]")
    if returns != "{}":
        answer = answer.removeprefix("Page[").removesuffix("]")
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    return signature.replace(
        parameters=[self, *signature.parameters.values()],
        return_annotation=returns.format(answer),
    )


def _async(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[_AsyncCaller, P], Coroutine[Any, Any, T]]:
    """A method that sends the call ``build`` makes of its arguments (and has its signature
    and documentation)."""

    @functools.wraps(build)
    async def method(self: _AsyncCaller, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._execute(build(*args, **kwargs))

    method.__signature__ = _signature(build, "{}")  # type: ignore[attr-defined]
    return method


def _async_items(
    build: Callable[P, Call[Page[T]]],
) -> Callable[Concatenate[_AsyncCaller, P], AsyncIterator[T]]:
    """A method that iterates over every item of every page, fetching pages as it goes."""

    @functools.wraps(build)
    def method(self: _AsyncCaller, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        async def items() -> AsyncIterator[T]:
            call = build(*args, **kwargs)
            while True:
                page = await self._execute(call)
                for item in page.data:
                    yield item
                if page.next_cursor is None:
                    return
                call = call.with_cursor(page.next_cursor)

        return items()

    method.__doc__ = f"Every item, page after page (``limit`` per page).\n\n{build.__doc__ or ''}"
    method.__signature__ = _signature(build, "AsyncIterator[{}]")  # type: ignore[attr-defined]
    return method


def _sync(build: Callable[P, Call[T]]) -> Callable[Concatenate[_SyncCaller, P], T]:
    @functools.wraps(build)
    def method(self: _SyncCaller, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._execute(build(*args, **kwargs))

    method.__signature__ = _signature(build, "{}")  # type: ignore[attr-defined]
    return method


def _sync_items(
    build: Callable[P, Call[Page[T]]],
) -> Callable[Concatenate[_SyncCaller, P], Iterator[T]]:
    @functools.wraps(build)
    def method(self: _SyncCaller, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        def items() -> Iterator[T]:
            call = build(*args, **kwargs)
            while True:
                page = self._execute(call)
                yield from page.data
                if page.next_cursor is None:
                    return
                call = call.with_cursor(page.next_cursor)

        return items()

    method.__doc__ = f"Every item, page after page (``limit`` per page).\n\n{build.__doc__ or ''}"
    method.__signature__ = _signature(build, "Iterator[{}]")  # type: ignore[attr-defined]
    return method


class _Settings:
    """What both clients are configured with."""

    def __init__(
        self,
        base_url: str,
        key: str | None,
        account_id: str | None,
        retry: Retry,
        verify_cache: VerifyCache | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.account_id = account_id
        self.retry = retry
        self.verify_cache = verify_cache

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, operation: Operation) -> dict[str, str]:
        return _http.request_headers(operation, self.key, self.account_id)


# --- Async -----------------------------------------------------------------------------------


class _AsyncResource:
    def __init__(self, client: AsyncKeyservice) -> None:
        self._client = client

    async def _execute(self, call: Call[T]) -> T:
        return await self._client._execute(call)


class AsyncAccountAPI(_AsyncResource):
    get = _async(ops.account_get)
    update = _async(ops.account_update)
    usage = _async(ops.account_usage)


class AsyncMembersAPI(_AsyncResource):
    list = _async(ops.members_list)
    iterate = _async_items(ops.members_list)
    add = _async(ops.members_add)
    get = _async(ops.members_get)
    update = _async(ops.members_update)
    remove = _async(ops.members_remove)


class AsyncApplicationsAPI(_AsyncResource):
    list = _async(ops.applications_list)
    iterate = _async_items(ops.applications_list)
    create = _async(ops.applications_create)
    get = _async(ops.applications_get)
    update = _async(ops.applications_update)
    delete = _async(ops.applications_delete)


class AsyncKeysAPI(_AsyncResource):
    create = _async(ops.keys_create)
    list = _async(ops.keys_list)
    iterate = _async_items(ops.keys_list)
    get = _async(ops.keys_get)
    update = _async(ops.keys_update)
    rotate = _async(ops.keys_rotate)
    revoke = _async(ops.keys_revoke)
    usage = _async(ops.keys_usage)


class AsyncPersonalKeysAPI(_AsyncResource):
    create = _async(ops.personal_keys_create)
    list = _async(ops.personal_keys_list)
    iterate = _async_items(ops.personal_keys_list)
    get = _async(ops.personal_keys_get)
    update = _async(ops.personal_keys_update)
    rotate = _async(ops.personal_keys_rotate)
    revoke = _async(ops.personal_keys_revoke)


class AsyncUsersAPI(_AsyncResource):
    me = _async(ops.users_me)
    accept_invitation = _async(ops.invitations_accept)


class AsyncSessionsAPI(_AsyncResource):
    create = _async(ops.sessions_create)
    end = _async(ops.sessions_end)


class AsyncAuditEventsAPI(_AsyncResource):
    list = _async(ops.audit_events_list)
    iterate = _async_items(ops.audit_events_list)


class AsyncEventsAPI(_AsyncResource):
    list = _async(ops.events_list)
    iterate = _async_items(ops.events_list)


class AsyncKeyservice:
    """An async client of keyservice at ``base_url``.

    ``key`` is the client's own keyservice key: the management API needs one with keyservice's
    scopes (``keyservice:keys:write``, ...). For ``verify`` it is optional; when given, it must
    hold ``keyservice:verify``, only keys of its account verify, and ``client_address`` counts.
    ``account_id`` names the account for a user's key that reaches several.

    ``timeout`` (an ``httpx.Timeout`` or seconds) applies to every request, 10 s (3 s to
    connect) by default; ``retry`` says which failures are tried again (see ``Retry``);
    ``verify_cache`` keeps valid verdicts for a few seconds (see ``VerifyCache`` for the
    trade). ``http_client`` replaces the client's own ``httpx.AsyncClient`` (then its timeout
    and limits apply, and closing it is yours).
    """

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        account_id: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        verify_cache: VerifyCache | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = _Settings(base_url, key, account_id, retry or Retry(), verify_cache)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout, limits=DEFAULT_LIMITS)
        self.account = AsyncAccountAPI(self)
        self.members = AsyncMembersAPI(self)
        self.applications = AsyncApplicationsAPI(self)
        self.keys = AsyncKeysAPI(self)
        self.personal_keys = AsyncPersonalKeysAPI(self)
        self.users = AsyncUsersAPI(self)
        self.sessions = AsyncSessionsAPI(self)
        self.audit_events = AsyncAuditEventsAPI(self)
        self.events = AsyncEventsAPI(self)
        # Webhooks are not in keyservice's API yet; they will be `self.webhooks`.

    def __repr__(self) -> str:
        return f"AsyncKeyservice({self._settings.base_url!r})"

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def authenticated(self) -> bool:
        """Whether the client sends a key of its own."""
        return self._settings.key is not None

    @property
    def verify_cache(self) -> VerifyCache | None:
        return self._settings.verify_cache

    scopes = _async(ops.scopes_list)

    async def verify(
        self,
        key: str,
        *,
        scopes: Sequence[str] = (),
        endpoint: str | None = None,
        cost: int | None = None,
        account_id: str | None = None,
        client_address: str | None = None,
    ) -> Verdict:
        """Is ``key`` good, for ``scopes`` (all of them), on ``account_id`` (needed for a
        user's key that reaches several accounts)? ``endpoint`` (``"GET /v1/contacts"``) is
        counted in the key's usage; ``cost`` spends more than one token of its rate limit.

        Every verdict is returned, never raised: check ``valid`` and ``code``. ``UNAVAILABLE``
        (keyservice cannot reach its database) is a verdict too, with ``retry_after``. A
        request keyservice refuses (a malformed one, this client's own key refused, too many
        failures from the client's address) raises a ``ProblemError``; keyservice out of
        reach raises ``KeyserviceConnectionError``.
        """
        request = ops.verify_request(
            key,
            scopes=scopes,
            endpoint=endpoint,
            cost=cost,
            account_id=account_id,
            client_address=client_address,
        )
        cache = self._settings.verify_cache
        if cache is not None and (cached := cache.get(request, self._settings.key)) is not None:
            return cached
        response = await self._send(ops.VERIFY, ops.VERIFY.path, json=to_json(request))
        answer = _http.verdict(response)
        if cache is not None:
            cache.put(request, self._settings.key, answer)
        return answer

    async def _execute(self, call: Call[T]) -> T:
        response = await self._send(call.operation, call.path, params=call.params, json=call.json)
        return _http.outcome(call, response)

    async def _send(
        self,
        operation: Operation,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The request, sent and retried as ``Retry`` allows; the last answer, whatever its
        status."""
        settings = self._settings
        request_headers = settings.headers(operation) | (headers or {})
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    operation.method,
                    settings.url(path),
                    params=params or None,
                    json=json,
                    headers=request_headers,
                )
            except httpx.TransportError as error:
                delay = settings.retry.after_error(operation, attempt, error)
                if delay is None:
                    raise _http.connection_error(operation, error) from error
            else:
                delay = settings.retry.after_status(operation, attempt, response)
                if delay is None:
                    return response
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- Sync ------------------------------------------------------------------------------------


class _SyncResource:
    def __init__(self, client: Keyservice) -> None:
        self._client = client

    def _execute(self, call: Call[T]) -> T:
        return self._client._execute(call)


class AccountAPI(_SyncResource):
    get = _sync(ops.account_get)
    update = _sync(ops.account_update)
    usage = _sync(ops.account_usage)


class MembersAPI(_SyncResource):
    list = _sync(ops.members_list)
    iterate = _sync_items(ops.members_list)
    add = _sync(ops.members_add)
    get = _sync(ops.members_get)
    update = _sync(ops.members_update)
    remove = _sync(ops.members_remove)


class ApplicationsAPI(_SyncResource):
    list = _sync(ops.applications_list)
    iterate = _sync_items(ops.applications_list)
    create = _sync(ops.applications_create)
    get = _sync(ops.applications_get)
    update = _sync(ops.applications_update)
    delete = _sync(ops.applications_delete)


class KeysAPI(_SyncResource):
    create = _sync(ops.keys_create)
    list = _sync(ops.keys_list)
    iterate = _sync_items(ops.keys_list)
    get = _sync(ops.keys_get)
    update = _sync(ops.keys_update)
    rotate = _sync(ops.keys_rotate)
    revoke = _sync(ops.keys_revoke)
    usage = _sync(ops.keys_usage)


class PersonalKeysAPI(_SyncResource):
    create = _sync(ops.personal_keys_create)
    list = _sync(ops.personal_keys_list)
    iterate = _sync_items(ops.personal_keys_list)
    get = _sync(ops.personal_keys_get)
    update = _sync(ops.personal_keys_update)
    rotate = _sync(ops.personal_keys_rotate)
    revoke = _sync(ops.personal_keys_revoke)


class UsersAPI(_SyncResource):
    me = _sync(ops.users_me)
    accept_invitation = _sync(ops.invitations_accept)


class SessionsAPI(_SyncResource):
    create = _sync(ops.sessions_create)
    end = _sync(ops.sessions_end)


class AuditEventsAPI(_SyncResource):
    list = _sync(ops.audit_events_list)
    iterate = _sync_items(ops.audit_events_list)


class EventsAPI(_SyncResource):
    list = _sync(ops.events_list)
    iterate = _sync_items(ops.events_list)


class Keyservice:
    """The synchronous twin of ``AsyncKeyservice``: the same arguments, resources and methods,
    answering directly instead of through ``await``."""

    def __init__(
        self,
        base_url: str,
        key: str | None = None,
        *,
        account_id: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        verify_cache: VerifyCache | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._settings = _Settings(base_url, key, account_id, retry or Retry(), verify_cache)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout, limits=DEFAULT_LIMITS)
        self.account = AccountAPI(self)
        self.members = MembersAPI(self)
        self.applications = ApplicationsAPI(self)
        self.keys = KeysAPI(self)
        self.personal_keys = PersonalKeysAPI(self)
        self.users = UsersAPI(self)
        self.sessions = SessionsAPI(self)
        self.audit_events = AuditEventsAPI(self)
        self.events = EventsAPI(self)
        # Webhooks are not in keyservice's API yet; they will be `self.webhooks`.

    def __repr__(self) -> str:
        return f"Keyservice({self._settings.base_url!r})"

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def authenticated(self) -> bool:
        return self._settings.key is not None

    @property
    def verify_cache(self) -> VerifyCache | None:
        return self._settings.verify_cache

    scopes = _sync(ops.scopes_list)

    def verify(
        self,
        key: str,
        *,
        scopes: Sequence[str] = (),
        endpoint: str | None = None,
        cost: int | None = None,
        account_id: str | None = None,
        client_address: str | None = None,
    ) -> Verdict:
        """See ``AsyncKeyservice.verify``."""
        request = ops.verify_request(
            key,
            scopes=scopes,
            endpoint=endpoint,
            cost=cost,
            account_id=account_id,
            client_address=client_address,
        )
        cache = self._settings.verify_cache
        if cache is not None and (cached := cache.get(request, self._settings.key)) is not None:
            return cached
        response = self._send(ops.VERIFY, ops.VERIFY.path, json=to_json(request))
        answer = _http.verdict(response)
        if cache is not None:
            cache.put(request, self._settings.key, answer)
        return answer

    def _execute(self, call: Call[T]) -> T:
        response = self._send(call.operation, call.path, params=call.params, json=call.json)
        return _http.outcome(call, response)

    def _send(
        self,
        operation: Operation,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        settings = self._settings
        request_headers = settings.headers(operation) | (headers or {})
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    operation.method,
                    settings.url(path),
                    params=params or None,
                    json=json,
                    headers=request_headers,
                )
            except httpx.TransportError as error:
                delay = settings.retry.after_error(operation, attempt, error)
                if delay is None:
                    raise _http.connection_error(operation, error) from error
            else:
                delay = settings.retry.after_status(operation, attempt, response)
                if delay is None:
                    return response
            time.sleep(delay)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

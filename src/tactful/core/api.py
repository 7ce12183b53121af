"""HTTP plumbing every feature's ``api.py`` uses: one transaction per request, the runtime,
authentication by API key, and RFC 9457 problem details."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import functools
import inspect
import re
import typing
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi import params as fastapi_params
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.exceptions import HTTPException as StarletteHTTPException

from tactful.core import storable
from tactful.core.auth import KeyAuthenticator, KeyUseRecorder, Principal
from tactful.core.errors import TactfulError, Unauthorized
from tactful.core.runtime import Runtime

log = structlog.get_logger("tactful.http")

PROBLEM_JSON = "application/problem+json"
WRITES_ATTR = "_tactful_writes"


_F = TypeVar("_F", bound=Callable[..., Any])


def writes(endpoint: _F) -> _F:
    """Mark a GET endpoint that writes (tracking pixels, redirects) as read-write."""
    setattr(endpoint, WRITES_ATTR, True)
    return endpoint


def reads_only(endpoint: _F) -> _F:
    """Mark a POST endpoint that writes nothing (a quote) as read-only: it runs in a
    read-only scope, which refuses writes, takes no write lock on SQLite and spends no
    round trips on a transaction on PostgreSQL."""
    setattr(endpoint, WRITES_ATTR, False)
    return endpoint


class _Threads:
    """Worker threads of their own, one limiter per event loop (tests run several loops)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._limiters: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, anyio.CapacityLimiter
        ] = weakref.WeakKeyDictionary()

    async def run(self, work: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(self.size)
        await anyio.to_thread.run_sync(work, limiter=limiter)


# A plain function endpoint's transaction ends on the endpoint's own worker thread, right
# after it: the request holding SQLite's write lock, or a PostgreSQL row lock, lets it go
# without waiting for another thread. A coroutine endpoint's transaction, and a failed
# request's, end on threads of their own: requests wait for SQLite's single write lock on
# the shared worker threads, and the request holding the lock must never need one of those
# threads to let it go, or a burst of calls deadlocks until the busy timeout. Nor may a
# commit wait for a thread of its own kind: a commit that flushes a change can wait for a
# row lock (PostgreSQL) held by another request that is itself waiting to commit. So these
# threads are never the limit; the connection pool is (a request commits on the connection
# it holds; one that holds none has nothing to wait for).
_ENDING = _Threads(1024)
# Recording API key uses waits for the write lock too, so it takes neither kind of thread.
_KEY_USES = _Threads(1)


def _record_key_use_after(request: Request, response: Response) -> None:
    """Record the use of the request's API key, when one is due, in a transaction of its own
    once the response has gone out. Not in the request's transaction: a read-only one never
    commits (and on SQLite a write would upgrade its read transaction and fail when another
    writer went first), and in a write one the key's row would stay locked until the commit,
    so concurrent requests with the same key would queue behind each other; under load they
    held every commit thread, and the request holding the lock waited for one of them."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.key_id is None or principal.unrecorded_use is None:
        return
    runtime: Runtime = request.app.state.runtime
    record: KeyUseRecorder = request.app.state.record_key_use
    key_id, at = principal.key_id, principal.unrecorded_use

    def work() -> None:
        try:
            with runtime.db.scope() as session:
                record(session, key_id, at)
        except Exception:  # bookkeeping: the request itself has succeeded
            log.warning("api_key.use_not_recorded", key_id=key_id, exc_info=True)

    task = BackgroundTask(_KEY_USES.run, work)
    previous = response.background
    response.background = task if previous is None else BackgroundTasks([previous, task])


class TransactionalRoute(APIRoute):
    """Runs each request in one database transaction committed *before* the response goes
    out, so an acknowledged call is durable. GET/HEAD routes run read-only unless marked
    with :func:`writes`; other routes read-write unless marked with :func:`reads_only`.

    A plain function endpoint takes one hand-off to a worker thread, which runs the request's
    API key checks (see :func:`require_scope`), the endpoint, the response's validation
    against the route's model and the transaction's end; FastAPI then only serialises the
    validated answer. (Each hand-off costs a thread switch both ways; FastAPI alone would
    take four.) A response that fails validation is not committed.

    Before the endpoint, values no database can store (``core.storable``) in the path, the
    query or the validated body are refused with a 422 naming each field."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, self._in_one_hand_off(path, endpoint), **kwargs)
        # the path and query parameters taken as integers (a value beyond 64 bits is refused)
        self._int_params = frozenset(
            param.alias
            for param in get_flat_params(self.dependant)
            if isinstance(param.field_info, fastapi_params.Path | fastapi_params.Query)
            and _takes_integers(param.field_info.annotation)
        )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        marked = getattr(self.endpoint, WRITES_ATTR, None)
        readonly = (self.methods or set()) <= {"GET", "HEAD"} if marked is None else not marked

        async def handler(request: Request) -> Response:
            runtime: Runtime = request.app.state.runtime
            session = runtime.db.session(readonly=readonly)
            request.state.db_session = session
            call = _Call(session, readonly, request)
            token = _CALL.set(call)
            try:
                try:
                    response = await original(request)
                except RequestValidationError:
                    if call.checks:  # the caller's key is judged before the request's faults
                        await anyio.to_thread.run_sync(_pass_checks, call, {})
                    raise
            except BaseException:
                if not call.ended:
                    await _ENDING.run(functools.partial(_end, session, commit=False))
                raise
            finally:
                _CALL.reset(token)
            if not call.ended:
                await _ENDING.run(functools.partial(_end, session, commit=not readonly))
            _record_key_use_after(request, response)
            return response

        return handler

    def _in_one_hand_off(self, path: str, endpoint: Callable[..., Any]) -> Callable[..., Any]:
        """The endpoint as a coroutine FastAPI awaits: a plain function runs, with the
        request's key checks before it and the validation and the transaction's end after
        it, on one worker thread; a coroutine runs after the checks."""
        if inspect.isgeneratorfunction(endpoint) or inspect.isasyncgenfunction(endpoint):
            raise TypeError(f"{path}: a transactional route cannot stream")
        in_one: Callable[..., Any]
        if inspect.iscoroutinefunction(endpoint):

            async def in_one(**values: Any) -> Any:
                call = _CALL.get()
                await self._refuse_unstorable(call.request, values)
                if call.checks:
                    await anyio.to_thread.run_sync(_pass_checks, call, values)
                return await endpoint(**values)

        else:

            async def in_one(**values: Any) -> Any:
                call = _CALL.get()
                await self._refuse_unstorable(call.request, values)
                work = functools.partial(self._run, endpoint, call, values)
                return await anyio.to_thread.run_sync(work)

        # the endpoint's signature, annotations, name and marks (FastAPI reads them through it)
        return functools.wraps(endpoint)(in_one)

    async def _refuse_unstorable(self, request: Request, values: dict[str, Any]) -> None:
        """A 422 naming each value no database can store (see ``core.storable``) in the path,
        the query or the body FastAPI validated for the endpoint. (Endpoints reading the body
        themselves, such as ingestion, check their items one by one.)"""
        errors: list[tuple[tuple[str | int, ...], str]] = []
        for where, items in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        ):
            for name, raw in items:
                if not isinstance(raw, str):
                    continue
                fault = storable.text_fault(raw)
                if fault is None and name in self._int_params:
                    fault = _integer_fault(raw)
                if fault is not None:
                    errors.append(((where, name), fault))
        if self.body_field is not None:
            kind = request.headers.get("content-type", "")
            if kind.startswith(("multipart/", "application/x-www-form-urlencoded")):
                for name, value in (await request.form()).multi_items():
                    if isinstance(value, str) and storable.text_fault(value):
                        errors.append((("body", name), storable.NUL_REASON))
            elif storable.suspect(await request.body(), validated=True):  # kept by FastAPI
                # the values as validated: text such as "1_000" became an integer
                params = self.dependant.body_params
                for param in params:
                    embedded = len(params) > 1 or getattr(param.field_info, "embed", False)
                    at: tuple[str, ...] = ("body", param.alias) if embedded else ("body",)
                    errors += storable.faults(values.get(param.name), at)
        if errors:
            raise RequestValidationError(
                [{"type": "value_error", "loc": loc, "msg": reason} for loc, reason in errors]
            )

    def _run(self, endpoint: Callable[..., Any], call: _Call, values: dict[str, Any]) -> Any:
        """On the worker thread: checks, endpoint, validation, end of the transaction."""
        try:
            _pass_checks(call, values)
            result = endpoint(**values)
            if self.response_field is not None and not isinstance(result, Response):
                value, errors = self.response_field.validate(result, {}, loc=("response",))
                if errors:  # FastAPI validates it again and refuses it; nothing is committed
                    return result
                result = value
        except BaseException:
            call.ended = True
            _end(call.session, commit=False)
            raise
        call.ended = True
        _end(call.session, commit=not call.readonly)
        return result


def _takes_integers(annotation: Any) -> bool:
    """Whether a parameter's type is an integer, optional or not (a bool is not)."""
    if annotation is int:
        return True
    return any(arg is int for arg in typing.get_args(annotation))


# an integer's text as the parameters' validation reads it (underscores between digits, a
# fraction of zeros)
_INTEGER_TEXT = re.compile(r"\s*([+-]?[0-9_]+)(?:\.0*)?\s*")


def _integer_fault(raw: str) -> str | None:
    """Why an integer parameter's text names an integer no database can store, or None (also
    when it is no integer at all: the parameter's validation says so)."""
    found = _INTEGER_TEXT.fullmatch(raw)
    digits = found.group(1).replace("_", "") if found else ""
    if len(digits.lstrip("+-")) < 19:  # 2**63 has 19 digits
        return None
    try:
        value = int(digits)
    except ValueError:
        return None
    return None if storable.INT64_MIN <= value <= storable.INT64_MAX else storable.RANGE_REASON


@dataclass
class _Call:
    """A request in progress, as its endpoint's worker thread sees it."""

    session: Session
    readonly: bool
    request: Request
    checks: list[_KeyCheck] = field(default_factory=list)  # added by its dependencies
    ended: bool = False  # its transaction has ended on the endpoint's thread


@dataclass(frozen=True)
class _KeyCheck:
    """A route's demand for an API key with a scope, met on the endpoint's worker thread."""

    key: str
    scope: str


# The request in progress (a context variable is per task: each request sees its own).
_CALL: contextvars.ContextVar[_Call] = contextvars.ContextVar("tactful_call")


def _pass_checks(call: _Call, values: dict[str, Any]) -> None:
    """Authenticate the request's key once, in its transaction, and check every scope asked
    for, then hand the endpoint its principal in place of each check (raises 401 or 403
    before the endpoint runs)."""
    principal: Principal | None = None
    for check in call.checks:
        if principal is None:
            authenticate: KeyAuthenticator = call.request.app.state.authenticate_key
            principal = authenticate(call.session, check.key)
            call.request.state.principal = principal
        principal.require(check.scope)
    for name, value in values.items():
        if isinstance(value, _KeyCheck):
            values[name] = principal


def _end(session: Session, *, commit: bool) -> None:
    """End a request's transaction, committing it or not, and close its session, all in one
    call (on the endpoint's thread, or in one hand-off to the ending threads). A failed
    commit is rolled back."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Declares the API key in the OpenAPI schema (the Authorize button of /docs); the key is
# read by ``presented_key``, which also takes HTTP Basic and X-API-Key.
API_KEY_SCHEME = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="tk_…",
    description="An API key issued by `tactful init`, the settings page or "
    "POST /v1/api-keys, with the scope the route needs (ingest, pos or admin).",
    auto_error=False,
)


def api_router(
    *, prefix: str = "", tags: list[str] | None = None, keyed: bool = False
) -> APIRouter:
    """A router whose routes are transactional (``keyed``: every route reads the API key
    itself, and the OpenAPI schema says so)."""
    return APIRouter(
        prefix=prefix,
        tags=list(tags or []),
        route_class=TransactionalRoute,
        dependencies=[Security(API_KEY_SCHEME)] if keyed else [],
    )


# The two dependencies are coroutines: FastAPI runs a plain function dependency on a worker
# thread, a hand-off (both ways) that costs more than reading an attribute.


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_session(request: Request) -> Session:
    session: Session = request.state.db_session
    return session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]


def presented_key(request: Request) -> str | None:
    """The API key from ``Authorization: Bearer``, HTTP Basic (key as the user name, the way
    Segment's libraries send a write key) or ``X-API-Key``."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return request.headers.get("x-api-key")


def require_scope(scope: str) -> Any:
    """A dependency that authenticates the caller and checks one scope: the endpoint's
    parameter receives the :class:`Principal`.

    The key is looked up (a database read) on the endpoint's own worker thread, right before
    the endpoint runs, not on a thread of its own; a missing key is refused at once. Only an
    endpoint of a transactional route may take the principal: another dependency taking it
    would get the pending check, not the principal."""

    async def dependency(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY_SCHEME)],
    ) -> Any:
        key = presented_key(request)
        if not key:
            raise Unauthorized(
                "an API key is required (Authorization: Bearer <key>, or HTTP Basic with the "
                "key as the user name)"
            )
        call = _CALL.get(None)
        if call is None:
            raise RuntimeError("require_scope serves the routes of api_router() only")
        check = _KeyCheck(key, scope)
        call.checks.append(check)
        return check

    return Depends(dependency)


# -- problem details (RFC 9457) -----------------------------------------------------------


def problem_response(status: int, body: dict[str, Any], request: Request) -> JSONResponse:
    body.setdefault("instance", request.url.path)
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body.setdefault("request_id", request_id)
    headers = {"WWW-Authenticate": 'Basic realm="tactful"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)] or [str(p) for p in loc]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path


async def tactful_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TactfulError)
    return problem_response(exc.status_code, exc.to_problem(), request)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_path(err.get("loc", ())), "reason": str(err.get("msg", "invalid"))}
        for err in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
    return problem_response(
        422,
        {
            "type": "https://tactful.dev/problems/validation_failed",
            "title": "Validation failed",
            "status": 422,
            "detail": detail,
            "errors": errors,
        },
        request,
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "type": "about:blank",
        "title": str(exc.detail) if exc.status_code < 500 else "Server error",
        "status": exc.status_code,
        "detail": str(exc.detail),
    }
    return problem_response(exc.status_code, body, request)


async def unhandled_error_handler(request: Request, exc: Exception) -> Response:
    log.error("http.unhandled", path=request.url.path, exc_info=exc)
    return problem_response(
        500,
        {
            "type": "about:blank",
            "title": "Internal server error",
            "status": 500,
            "detail": "Something went wrong on our side; the request id identifies it in logs.",
        },
        request,
    )


EXCEPTION_HANDLERS: dict[type[Exception], Callable[[Request, Exception], Any]] = {
    TactfulError: tactful_error_handler,
    RequestValidationError: validation_error_handler,
    StarletteHTTPException: http_error_handler,
    Exception: unhandled_error_handler,
}

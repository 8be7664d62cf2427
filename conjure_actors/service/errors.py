"""The Comfy API v2 error envelope: ``{"error": {"code", "message", "details"}}``.

Handlers raise :class:`ApiError` (status, code, one-line message, optional details and
headers); the app turns it into the envelope. Starlette's own 404/405 and any unexpected
exception get the envelope too: an unexpected one is a 500 ``upstream_error`` with a generic
message (the detail goes to the server's log with ``--debug``, never to the client).

Codes (the spec's): ``invalid_request`` 400, ``unauthorized`` 401, ``forbidden`` 403,
``not_found`` / ``blob_not_found`` 404, ``hash_mismatch`` 409, ``payload_too_large`` 413,
``invalid_workflow`` / ``workflow_format_ui`` / ``missing_asset`` / ``idempotency_key_reuse``
422, ``queue_full`` / ``too_many_streams`` 429 (+ Retry-After), ``upstream_error`` 500, and
``insufficient_storage`` 507 (+ Retry-After: the server's disk is full; not in the contract,
whose only 5xx, ``upstream_error``, is a generic "something failed": 507 is HTTP's own word
for it, a 5xx every client already treats as the server's fault, and the operator's fix is
named in serve's one log line), ``storage_not_writable`` 507 (+ Retry-After: the blob store
refuses writes for another reason, permissions or a read-only disk; or a job while the output
folder's disk is read-only: ``service.outfolder``), ``asset_damaged`` 500 (an
asset's stored bytes are gone, cut or changed; ``details`` say which and how).

A client that left before its request was read (``ClientDisconnect``) is no server error:
nothing is answered to it, a debug line is logged, and the request is counted as 499 (as
nginx's "client closed request"), never 500.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Final

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from conjure_actors.runtime import ActorStoppedError
from conjure_actors.service.responses import JSONResponse

log = logging.getLogger("conjure_actors.service")

_HTTP_CODES: Mapping[int, str] = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    429: "rate_limited",
}


_PART_TOO_LARGE = re.compile(r"(?:Part|Field) exceeded maximum size of (\d+)KB\.")
"""Starlette's words (its only sign: a 400 HTTPException) for a form's text field over its
``max_part_size``."""


class ApiError(Exception):
    """An answer other than success, as the envelope says it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers or {})


def not_found(what: str = "not found") -> ApiError:
    return ApiError(404, "not_found", what)


def invalid_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, "invalid_request", message, details=details or None)


def too_deep() -> ApiError:
    """400 for a JSON body whose arrays or objects nest deeper than the decoder goes (it
    raises RecursionError: valid JSON, but not one any endpoint takes)."""
    return invalid_request(
        "the body's JSON is nested too deeply: send one whose values nest a few levels"
    )


def part_too_large(detail: str) -> ApiError | None:
    """413 ``payload_too_large`` when ``detail``, Starlette's word on a form it could not
    parse, says a text field was over its size limit (None: another fault of the form)."""
    match = _PART_TOO_LARGE.fullmatch(detail)
    if match is None:
        return None
    kib = int(match.group(1))
    return ApiError(
        413,
        "payload_too_large",
        f"a text form field is larger than {kib} KB: shorten it",
        details={"limit_bytes": kib * 1024},
    )


def envelope(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(exc: ApiError, *, head: bool = False) -> Response:
    if head:
        return Response(status_code=exc.status, headers=exc.headers)
    return JSONResponse(
        envelope(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc, head=request.method == "HEAD")


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    too_large = part_too_large(message) if exc.status_code == 400 else None
    api = too_large or ApiError(exc.status_code, code, message, headers=exc.headers)
    return error_response(api, head=request.method == "HEAD")


CLIENT_GONE: Final = 499
"""The status a request whose client left is counted with (nginx's; never sent)."""


def client_gone(request: Request) -> Response:
    """The answer to a request whose client left before it was read: a debug line, and a
    499 that reaches no one (the server drops what is sent on a closed connection) but
    labels the request in the metrics."""
    log.debug("the client left during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_GONE)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientDisconnect)
    return client_gone(request)


_LOGGED: Final = "_conjure_logged"
"""The attribute :func:`handle_unexpected` marks an exception it logged with (exceptions
have a ``__dict__``; the built-in ones take no weak reference)."""


def was_logged(exc: BaseException) -> bool:
    """Whether :func:`handle_unexpected` logged ``exc`` already (Starlette re-raises it
    after its answer; the outermost layer of serve then says nothing more)."""
    return getattr(exc, _LOGGED, False) is True


_DISK_FULL: Final = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a full disk or quota."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain, not a loop
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def insufficient_storage(retry_after: int) -> ApiError:
    """507 ``insufficient_storage``: a write of the request (its upload's blob, a form's
    spooled file) found the server's disk full; what it wrote was removed."""
    return ApiError(
        507,
        "insufficient_storage",
        "the server's disk is full: nothing of this request was stored; retry once its"
        " operator freed space",
        headers={"Retry-After": str(retry_after)},
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Any other exception: one line (the traceback with ``--debug``) and a 500, or 507
    for a full disk; ``exc`` is marked logged (:func:`was_logged`)."""
    setattr(exc, _LOGGED, True)
    if isinstance(exc, ClientDisconnect):  # raised outside the routes (a middleware)
        return client_gone(request)
    if _disk_full(exc):
        # Not the client's fault nor a bug: the operator's to fix, in one line.
        log.error(
            "the disk is full (%s) on %s %s: answered 507 insufficient_storage; free space"
            " on the disk of --log (its .blobs folder) or of the temporary folder",
            os.strerror(errno.ENOSPC),
            request.method,
            request.url.path,
        )
        log.debug("traceback of the full disk", exc_info=exc)
        service = getattr(request.app.state, "service", None)
        retry = getattr(getattr(service, "settings", None), "retry_after", 5)
        return error_response(insufficient_storage(retry), head=request.method == "HEAD")
    # One line by default; the traceback only when logging is at DEBUG (``--debug``).
    log.error(
        "unexpected %s on %s %s (answered 500 upstream_error)",
        type(exc).__name__,
        request.method,
        request.url.path,
    )
    log.debug("traceback of the unexpected error", exc_info=exc)
    return error_response(
        ApiError(500, "upstream_error", "internal error; the job service logged it")
    )


def restarting(retry_after: int) -> ApiError:
    """503 ``unavailable``: an actor the request needed stopped (or restarts) before it
    answered; nothing was logged for the request, so a retry is safe."""
    return ApiError(
        503,
        "unavailable",
        "the job service is restarting; retry",
        headers={"Retry-After": str(retry_after)},
    )


async def handle_actor_stopped(request: Request, exc: Exception) -> Response:
    service = getattr(request.app.state, "service", None)
    retry = getattr(getattr(service, "settings", None), "retry_after", 1)
    return error_response(restarting(retry), head=request.method == "HEAD")


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    ApiError: handle_api_error,
    ActorStoppedError: handle_actor_stopped,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    # Answered within the app's middleware (as ApiError is: the metrics see the status),
    # not re-raised as the catch-all's are.
    OSError: handle_unexpected,
    Exception: handle_unexpected,
}
"""Pass to ``Starlette(exception_handlers=...)``."""

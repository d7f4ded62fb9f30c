"""The HTTP door of every service: who is asking, then how much they send.

A request that may carry a body (POST, PUT, PATCH, DELETE) to a ``/v1`` route is
authenticated before its body is read: without a valid bearer token it gets 401
whatever it sends (malformed JSON, a body above the limit), so an unauthenticated
caller learns nothing of the routes' schemas and cannot make a service read a large
body. The route authorizes as before (``shared.auth``) and reuses the principal
resolved here.

Then the body's size: above ``LOOPWISE_MAX_BODY_BYTES`` (1 MiB by default) it gets
413 with a message, before anything is parsed or recorded; the routes that take a file
(``upload_paths``, a Label Studio import) have ``LOOPWISE_MAX_UPLOAD_BYTES``. A body
sent without a length (chunked) is read up to the limit here and handed on.

A pure ASGI middleware (no ``BaseHTTPMiddleware``), so the reviewer API's hot routes
pay a header check, not a task per request.

A body that fails validation gets FastAPI's 422 answer, but written so that the values
it echoes can always be written: FastAPI's own handler echoes the refused input, and a
``NaN`` in it (which Python's JSON parser accepts) made the 422 a 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import PRINCIPAL_KEY

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int,
                 upload_paths: Sequence[str] = (), protected_prefix: str = "/v1/") -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.uploads = [re.compile(p) for p in upload_paths]
        self.prefix = protected_prefix

    def limit_for(self, path: str) -> int:
        if any(p.fullmatch(path) for p in self.uploads):
            return self.max_upload_bytes
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(self.prefix):
            request = Request(scope)
            try:
                principal = await request.app.state.auth(request)
            except HTTPException as exc:
                await _refuse(scope, receive, send, exc.status_code, exc.detail, exc.headers)
                return
            scope[PRINCIPAL_KEY] = principal  # the scope is this request's alone
        limit = self.limit_for(path)
        length = _content_length(scope)
        if length == -1:
            await _refuse(scope, receive, send, 400, "invalid Content-Length header")
            return
        if length is not None:
            if length > limit:
                await _refuse(scope, receive, send, 413, _too_large(limit))
                return
            await self.app(scope, receive, send)
            return
        body, more = await _read_up_to(receive, limit)
        if more:
            await _refuse(scope, receive, send, 413, _too_large(limit))
            return
        await self.app(scope, _replay(body, receive), send)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": said, not written as invalid JSON
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a request that does not validate, with its errors made JSON."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))},
                        status_code=422)


def _too_large(limit: int) -> str:
    return f"request body above the limit of {limit} bytes"


def _content_length(scope: Scope) -> int | None:
    """The declared length; None without one (chunked), -1 when it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _read_up_to(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body's bytes while they stay within ``limit``; True if there was more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replayed


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: Any,
                  headers: Mapping[str, str] | None = None) -> None:
    # The body is left unread; the server discards what the client still sends of it.
    response = JSONResponse({"detail": detail}, status_code=status, headers=dict(headers or {}))
    await response(scope, receive, send)

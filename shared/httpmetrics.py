"""HTTP request metrics of every service: a count and a latency histogram by route
template, method and status (``loopwise_http_requests_total``,
``loopwise_http_request_seconds``).

A pure ASGI middleware rather than prometheus-fastapi-instrumentator: that library
registers its metrics once per process and returns no instrumentation for a second app
(the test suite runs several services in one process), its labels cannot carry the
service's name, and the project keeps every metric name in :mod:`shared.metrics` for
``deploy/`` and its tests. The route is the template FastAPI matched
(``/v1/projects/{project}/tasks/next``), never the raw path, so the series stay
bounded; a request no route matches is ``route="unmatched"``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics

UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request."""
    route = scope.get("route")  # set by FastAPI's routing on the (shared) scope
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):  # mounts
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED)) or UNMATCHED
    return UNMATCHED


class RequestMetrics:
    """Counts and times every HTTP request; a request whose handler raised is a 500."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            labels: tuple[Any, ...] = (self.service, route_template(scope), scope["method"],
                                       str(status))
            metrics.HTTP_REQUESTS.labels(*labels).inc()
            metrics.HTTP_SECONDS.labels(*labels).observe(time.perf_counter() - started)

"""What every service process shares: lifespan wiring, /livez, /readyz, /metrics, auth.

A service supplies an object with ``start()`` (register its consumers and its
background loops on ``runtime.supervisor``) and ``stop()``; this module owns the
engine, the bus, the supervisor and the HTTP shell around them.

Shutting down goes from the outside in: the streams stop being read, the
supervisor's loops and jobs end (they use the service, the bus and the engine),
then the service stops and the connections close.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics as metric_defs
from shared import openapi
from shared.auth import REFRESH_SECONDS, TokenAuth, authorize_global
from shared.bus import Bus
from shared.contracts import asyncapi_document
from shared.db import make_engine
from shared.faults import INFRASTRUCTURE, unavailable_store
from shared.httpmetrics import RequestMetrics
from shared.leadership import Leadership
from shared.logs import configure_logging, get_logger
from shared.peers import Peers
from shared.readiness import all_consuming
from shared.request_guard import RequestGuard, validation_failed
from shared.settings import Settings
from shared.supervisor import Supervisor

CHECK_TIMEOUT_SECONDS = 2.0  # a hung store makes readiness fail, not hang
RETRY_AFTER_SECONDS = 5  # a 503's Retry-After: about one consumer backoff at its cap


async def _check(call: Awaitable[Any]) -> str:
    try:
        await asyncio.wait_for(call, CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


class Liveness(BaseModel):
    status: Literal["ok"]
    service: str


class ConsumerReport(BaseModel):
    """One stream consumer of the process, as readiness sees it."""

    stream: str
    group: str
    status: str = Field(description="consuming, starting, backing off, stalled or stopped")
    phase: str
    seconds_since_progress: float
    failures: int
    last_error: str | None
    group_recreated: int


class Readiness(BaseModel):
    status: Literal["ok", "unhealthy"]
    service: str
    checks: dict[str, str] = Field(description="redis, database: 'ok' or the error")
    consumers: list[ConsumerReport]


@dataclass
class Runtime:
    """The lifespan objects of one service process."""

    name: str
    settings: Settings
    engine: AsyncEngine
    bus: Bus
    auth: TokenAuth
    supervisor: Supervisor
    peers: Peers  # the other services' APIs, as a service principal


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def knows_project(self, project: str) -> bool:
        """Declared (a settings copy from ``loopwise:projects``) or holding data here."""
        ...


def tune_gc() -> None:
    """Garbage-collector settings of a service process, applied once it has started up.

    What exists after start-up (modules, the app) lives as long as the process: frozen,
    later collections skip it. Requests and batches allocate many short-lived objects;
    with the default thresholds full collections ran often enough to show in tail latency
    and cost the label store's ingest about a fifth of its rate.
    """
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def mark_consumer_only(app: FastAPI) -> None:
    """This process only consumes the service's streams (``loopwise consume``, a forked
    stream worker): the service's own loops run in the process that serves HTTP."""
    app.state.consumer_only = True


async def authorize_metrics(request: Request, settings: Settings) -> None:
    """401/403 unless the request carries the metrics token or a global token."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), expected.encode()):
        return
    principal = await request.app.state.auth(request)
    authorize_global(principal, "reviewer")


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def service_of(request: Request) -> Any:
    return request.app.state.service


def create_service_app(
    name: str,
    settings: Settings,
    make_service: Callable[[Runtime], Service],
    routers: Sequence[APIRouter],
    description: str = "",
    upload_paths: Sequence[str] = (),
) -> FastAPI:
    """The service's app; ``upload_paths`` (regular expressions of paths) are the routes
    that take a file, with the upload body limit instead of the JSON one."""
    log = get_logger(name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(name, settings.log_level, settings.log_json)
        primary = not getattr(app.state, "consumer_only", False)
        engine = make_engine(settings.database_url)
        supervisor = Supervisor(name, primary=primary)
        bus = Bus(settings, name, supervisor)
        runtime = Runtime(name, settings, engine, bus, TokenAuth(engine), supervisor,
                          Peers(settings, engine, name))
        service = make_service(runtime)
        app.state.runtime = runtime
        app.state.auth = runtime.auth
        app.state.service = service
        app.state.known_projects = set()  # shared.auth.require_known
        # Tokens in use stay fresh (a revocation is in force within 2 s, idle or busy);
        # in the process that serves HTTP, the one that authenticates.
        supervisor.every("token refresh", REFRESH_SECONDS, runtime.auth.keep_fresh,
                         each_replica=True)
        leadership = None
        if primary:
            # Replicas elect the one that does the service's own loops (shared.leadership).
            leadership = supervisor.leadership = Leadership(bus.redis, name)
            with supervisor.guard("leadership"):
                await leadership.keep()
            supervisor.every("leadership", leadership.renew_every, leadership.keep,
                             each_replica=True)
        await service.start()
        await bus.start()
        log.info("started", port=settings.port_of(name), primary=primary,
                 leader=supervisor.leading)
        try:
            yield
        finally:
            await bus.stop_consuming()
            await supervisor.stop()
            if leadership is not None:
                await leadership.release()
            await service.stop()
            await bus.close()
            await runtime.auth.aclose()
            await runtime.peers.aclose()
            await engine.dispose()
            log.info("stopped")

    # /docs and /redoc from assets in the fastapi-offline package, not a CDN: they work on a
    # machine without internet access, and no browser asks a third party for them.
    app = FastAPIOffline(title=f"loopwise {name}", description=description, lifespan=lifespan,
                         static_url="/docs-assets")
    openapi.install(app)
    app.add_middleware(RequestMetrics, service=name)  # count and time every request

    @app.get("/livez", tags=["ops"], response_model=Liveness)
    async def livez() -> JSONResponse:
        """Liveness: the process answers. Restart it only if this fails."""
        return JSONResponse({"status": "ok", "service": name})

    async def readiness(request: Request) -> JSONResponse:
        runtime = runtime_of(request)
        checks = {"redis": await _check(runtime.bus.redis.ping()),
                  "database": await _check(_select_one(runtime.engine))}
        stall = runtime.settings.consumer_stall_seconds
        now = time.monotonic()
        consumers = runtime.bus.consumers
        ready = all(v == "ok" for v in checks.values()) and all_consuming(consumers, now, stall)
        return JSONResponse(
            {"status": "ok" if ready else "unhealthy", "service": name, "checks": checks,
             # Whether this replica does the service's own loops (shared.leadership).
             "leader": runtime.supervisor.leading,
             "consumers": [c.report(now, stall) for c in consumers]},
            status_code=200 if ready else 503,
        )

    not_ready: dict[int | str, dict[str, Any]] = {503: {
        "model": Readiness,
        "description": "not ready: a store does not answer or a consumer is not consuming"}}

    @app.get("/readyz", tags=["ops"], response_model=Readiness, responses=not_ready)
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: Redis and the database answer and every stream consumer of this
        process is consuming (not backing off, stalled or stopped); 503 with each
        consumer's state otherwise."""
        return await readiness(request)

    @app.get("/healthz", tags=["ops"], response_model=Readiness, responses=not_ready)
    async def healthz(request: Request) -> JSONResponse:
        """The readiness check under its older name (``/readyz``)."""
        return await readiness(request)

    exposition: dict[int | str, dict[str, Any]] = {200: {
        "description": "the Prometheus text exposition",
        "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}}

    @app.get("/metrics", tags=["ops"], response_class=Response, responses=exposition)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics, for ``LOOPWISE_METRICS_TOKEN`` or a ``*`` admin or service
        token: per-labeler gold and correction rates and queue depths would let a
        labeler tell gold tasks from others, so the scrape is authenticated too."""
        await authorize_metrics(request, settings)
        return Response(metric_defs.exposition(), media_type=CONTENT_TYPE_LATEST)

    document: dict[int | str, dict[str, Any]] = {200: {
        "description": "an AsyncAPI 3.0 document",
        "content": {"application/json": {"schema": {"type": "object"}}}}}

    @app.get("/asyncapi.json", tags=["ops"], responses=document)
    async def asyncapi() -> JSONResponse:
        """The AsyncAPI document of every loopwise stream (``schemas/asyncapi.json``): who
        consumes and who publishes it, and the schema of its events."""
        return JSONResponse(asyncapi_document())

    for router in routers:
        app.include_router(router)
    # Authentication, then the body's size, before any route reads the body.
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes, upload_paths=upload_paths)
    app.add_exception_handler(RequestValidationError, validation_failed)

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """A store that is down is a 503 with a sentence a person can act on (the
        reviewer page shows it), not a 500 and a traceback."""
        store = unavailable_store(exc) or "a store this service needs"
        log.warning("request failed: store unavailable", path=request.url.path, store=store,
                    error=f"{type(exc).__name__}: {exc}")
        return JSONResponse(
            {"detail": f"{store} is unavailable right now, so the {name} cannot answer; "
                       "try again in a moment",
             "unavailable": store},
            status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    for error_class in INFRASTRUCTURE:
        if issubclass(error_class, Exception):
            app.add_exception_handler(error_class, store_unavailable)
    return app

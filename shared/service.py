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
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import metrics as metric_defs
from shared.auth import REFRESH_SECONDS, TokenAuth, authorize_global
from shared.bus import Bus
from shared.db import make_engine
from shared.httpmetrics import RequestMetrics
from shared.leadership import Leadership
from shared.logs import configure_logging, get_logger
from shared.peers import Peers
from shared.readiness import all_consuming
from shared.request_guard import RequestGuard, validation_failed
from shared.settings import Settings
from shared.supervisor import Supervisor

CHECK_TIMEOUT_SECONDS = 2.0  # a hung store makes readiness fail, not hang


async def _check(call: Awaitable[Any]) -> str:
    try:
        await asyncio.wait_for(call, CHECK_TIMEOUT_SECONDS)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


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

    app = FastAPI(title=f"loopwise {name}", description=description, lifespan=lifespan)
    app.add_middleware(RequestMetrics, service=name)  # count and time every request

    @app.get("/livez", tags=["ops"])
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

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: Redis and the database answer and every stream consumer of this
        process is consuming (not backing off, stalled or stopped); 503 with each
        consumer's state otherwise."""
        return await readiness(request)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> JSONResponse:
        """The readiness check under its older name (``/readyz``)."""
        return await readiness(request)

    @app.get("/metrics", tags=["ops"])
    async def metrics(request: Request) -> Response:
        """Prometheus metrics, for ``LOOPWISE_METRICS_TOKEN`` or a ``*`` admin or service
        token: per-labeler gold and correction rates and queue depths would let a
        labeler tell gold tasks from others, so the scrape is authenticated too."""
        await authorize_metrics(request, settings)
        return Response(metric_defs.exposition(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    # Authentication, then the body's size, before any route reads the body.
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes, upload_paths=upload_paths)
    app.add_exception_handler(RequestValidationError, validation_failed)
    return app

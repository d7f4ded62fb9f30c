"""The router service process."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import Settings, get_settings

from .api import router
from .service import RouterService
from .web import api as web_api
from .web import router as web_router


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "router",
        settings or get_settings(),
        RouterService,
        [router, web_api, web_router],
        description="Routes predictions by confidence; serves review tasks.",
    )

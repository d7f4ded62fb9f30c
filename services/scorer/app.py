"""The scorer service process."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import Settings, get_settings

from .api import router
from .service import ScorerService


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "scorer",
        settings or get_settings(),
        ScorerService,
        [router],
        description="Scores items with per-project models; trains them on current labels.",
    )

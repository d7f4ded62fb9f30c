"""The quality service process."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import Settings, get_settings

from .api import router
from .service import QualityService


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "quality",
        settings or get_settings(),
        QualityService,
        [router],
        description="Agreement, consensus, gold and automation-bias detection.",
    )

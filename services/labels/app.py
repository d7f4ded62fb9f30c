"""The labels service process."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import Settings, get_settings

from .api import IMPORT_PATHS, router
from .service import LabelsService


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        "labels",
        settings or get_settings(),
        LabelsService,
        [router],
        description="Versioned, attributed label store.",
        upload_paths=IMPORT_PATHS,
    )

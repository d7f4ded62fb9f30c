"""Settings of the quality service: ``LOOPWISE_QUALITY_*`` environment variables.

Per-project settings (the label schema's level of measurement and class order, the
guideline-alert threshold, auto-pause) come from ``LOOPWISE_QUALITY_PROJECTS``, a JSON
object keyed by project, e.g.
``{"ratings": {"level": "ordinal", "categories": ["1","2","3","4","5"],
"guideline_threshold": 0.5}}``; a project not listed gets the defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.quality.detection import threshold_for


class ProjectQuality(BaseModel):
    level: Literal["nominal", "ordinal", "interval"] = "nominal"
    categories: list[str] | None = None
    guideline_threshold: float | None = Field(None, ge=-1.0, le=1.0)
    auto_pause: bool | None = None


class QualityConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPWISE_QUALITY_", extra="ignore")

    min_confidence: float = Field(0.8, ge=0.0, le=1.0, description="adjudicate below this")
    min_votes: int = Field(2, ge=1, description="human votes before an item gets a consensus")
    guideline_threshold: float = Field(0.6, description="class agreement (alpha) alert level")
    guideline_min_items: int = Field(20, ge=1)
    auto_pause: bool = True
    cusum_threshold: float = Field(threshold_for(2000, 0.01), gt=0)
    n_boot: int = Field(200, ge=10)
    quiet_seconds: float = Field(2.0, ge=0)
    max_delay_seconds: float = Field(30.0, ge=0)
    projects: dict[str, ProjectQuality] = Field(default_factory=dict)

    def project(self, name: str) -> ProjectQuality:
        return self.projects.get(name, ProjectQuality())

    def guideline_threshold_of(self, name: str) -> float:
        chosen = self.project(name).guideline_threshold
        return self.guideline_threshold if chosen is None else chosen

    def auto_pause_of(self, name: str) -> bool:
        chosen = self.project(name).auto_pause
        return self.auto_pause if chosen is None else chosen

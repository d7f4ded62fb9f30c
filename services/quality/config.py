"""Settings of the quality service: ``LOOPWISE_QUALITY_*`` environment variables.

These are the service's defaults. A project's own (its level of measurement and class
order, its guideline-alert threshold, auto-pause) are the ``quality`` section of its
settings, kept by the labels service (``shared.projects.QualitySettings``).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.quality.detection import threshold_for
from shared.projects import QualitySettings


class QualityConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPWISE_QUALITY_", extra="ignore")

    min_confidence: float = Field(0.8, ge=0.0, le=1.0, description="adjudicate below this")
    min_votes: int = Field(2, ge=1, description="human votes before an item gets a consensus")
    guideline_threshold: float = Field(0.6, description="class agreement (alpha) alert level")
    guideline_min_items: int = Field(20, ge=1)
    auto_pause: bool = True
    cusum_threshold: float = Field(
        threshold_for(2000, 0.005), gt=0,
        description="full-deference CUSUM: 0.5% false flags per 2,000 pre-labelled tasks")
    partial_cusum_threshold: float = Field(
        threshold_for(100, 0.005), gt=0,
        description="partial-deference CUSUM: 0.5% false flags per 100 known-wrong gold tasks")
    n_boot: int = Field(200, ge=10)
    stats_max_items: int = Field(
        20_000, ge=2, description="agreement intervals: bootstrap over at most this many "
        "items a window, drawn at random (a larger window's interval comes out wider)")
    full_refit_max_votes: int = Field(
        20_000, ge=0, description="projects up to this many votes: a full Dawid-Skene refit "
        "on every settle; above it, incremental updates and background refits")
    quiet_seconds: float = Field(2.0, ge=0)
    max_delay_seconds: float = Field(
        5.0, ge=0, description="consensus under a steady stream: at most this late")
    stats_max_delay_seconds: float = Field(
        60.0, ge=0, description="agreement intervals under a steady stream: at most this late")
    stats_min_interval_seconds: float = Field(
        15.0, ge=0, description="agreement intervals: at most once in this many seconds")
    checkpoint_interval_seconds: float = Field(
        30.0, gt=0, description="a changed project's state is checkpointed this often (and "
        "on stop); a restart replays only the votes stored after its checkpoint")

    def guideline_threshold_of(self, project: QualitySettings) -> float:
        chosen = project.guideline_threshold
        return self.guideline_threshold if chosen is None else chosen

    def auto_pause_of(self, project: QualitySettings) -> bool:
        chosen = project.auto_pause
        return self.auto_pause if chosen is None else chosen

"""A project's scorer settings: how it picks examples for people, what it trains on."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .strategies import STRATEGIES


class ScorerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str = "margin"
    diversity: Literal["kmeanspp", "coreset"] | None = "kmeanspp"
    include_auto: bool = Field(False, description="train on auto-accepted labels too (opt in)")
    select_every_seconds: int | None = Field(
        None, ge=10, description="select a batch on this schedule (None: only on request)"
    )
    select_budget: int = Field(50, ge=1, le=10_000, description="batch size of scheduled selection")

    @field_validator("strategy")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
        return name

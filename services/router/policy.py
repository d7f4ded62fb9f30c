"""A project's routing policy: how confident is auto, how tasks are shown, how gold is salted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RoutingPolicy(BaseModel):
    """Stored per project and changed over HTTP by an admin."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["fixed", "target_precision"] = "fixed"
    auto_accept_threshold: float = Field(0.9, ge=0.0, le=1.0, description="used when fixed")
    target_precision: float | None = Field(None, gt=0.0, lt=1.0)
    audit_rate: float = Field(0.02, ge=0.0, le=1.0,
                              description="share of would-be auto-accepts audited blind")
    default_threshold: float = Field(0.99, ge=0.0, le=1.0,
                                     description="conservative threshold until calibrated")
    min_audits: int = Field(30, ge=1, description="effective observations needed to calibrate")
    overlap: int = Field(1, ge=1, le=5)
    mode: Literal["blind", "prelabel"] = "blind"
    choice_margin: float | None = Field(
        None, ge=0.0, le=1.0, description="top-2 margin below which a task is shown as a choice"
    )
    choice_top_k: int = Field(3, ge=2, le=10)
    gold_rate: float = Field(0.05, ge=0.0, le=1.0)
    gold_planted_share: float = Field(0.5, ge=0.0, le=1.0)
    queue_cap: int = Field(100_000, ge=1)
    guideline_version: str | None = None

    @model_validator(mode="after")
    def _target_needs_a_value(self) -> RoutingPolicy:
        if self.kind == "target_precision" and self.target_precision is None:
            raise ValueError("kind 'target_precision' needs target_precision (e.g. 0.98)")
        return self

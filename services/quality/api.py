"""HTTP routes of the quality service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from shared.auth import Principal, project_access
from shared.events import FlagSummary
from shared.limits import Note, Project, UserId
from shared.projects import QualitySettings
from shared.service import service_of

from .service import evaluation_of

router = APIRouter(prefix="/v1", tags=["quality"])


class ClearFlagIn(BaseModel):
    note: Note | None = Field(None, description="what the review found, for the record")


class ModelErrorRate(BaseModel):
    mean: float | None
    cautious: float | None = Field(description="an upper bound: what the flags compare to")
    gold_checked: int


class Adjudication(BaseModel):
    requested: int
    adjudicated: int
    open: list[str]
    labels: dict[str, str] = Field(description="item -> adjudicated label")


class QualityOut(BaseModel):
    """A project's counts, agreement, consensus and per-labeler gold and deference figures.
    The nested reports (``agreement``, ``consensus``, each labeler's entry) are objects
    whose fields follow the measures computed (see the README's quality section)."""

    project: str
    label_events: dict[str, int] = Field(description="events by source")
    items_with_human_labels: int
    items_with_overlap: int
    human_labels_by_labeler: dict[str, int]
    pairwise_agreement: float | None
    agreeing_pairs: int
    total_pairs: int
    agreement: dict[str, Any]
    consensus: dict[str, Any]
    model_error_rate: ModelErrorRate
    labelers: dict[str, dict[str, Any]]
    flags: list[dict[str, Any]]
    adjudication: Adjudication
    guideline_alerts: list[dict[str, Any]]
    settings: QualitySettings
    thresholds: dict[str, float | None]


class EvaluationOut(BaseModel):
    """Label error on gold and audits before review and after each stage, per mode."""

    project: str
    label_events: int
    gold_items: int | None = None
    audited_items: int | None = None
    before_review: dict[str, Any] | None = None
    stages: dict[str, dict[str, Any]] | None = None
    correction: dict[str, Any] | None = None
    over_time: dict[str, Any] | None = None
    labelers: dict[str, Any] | None = None
    # The scorer's refit of the loop's model against its baselines on held-out gold, or
    # ``{"available": false, "reason": ...}`` when it could not answer.
    model_comparison: dict[str, Any] | None = None


class FlagClearedOut(BaseModel):
    """The clearing as recorded (the ``labeler_flag_cleared`` event without its envelope)."""

    labeler_id: str
    cleared_by: str
    note: str | None
    cleared_at: str
    pause: bool
    tasks_seen: int
    flag: FlagSummary


@router.get("/projects/{project}/quality", response_model=QualityOut)
async def get_quality(
    project: Project,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> dict[str, Any]:
    """Counts, agreement, consensus and per-labeler gold and deference figures (reviewers
    and admins: a labeler's own gold count, read after a submit, would tell gold apart)."""
    return service_of(request).summary(project)


@router.get("/projects/{project}/evaluation", response_model=EvaluationOut)
async def get_evaluation(
    project: str,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> dict[str, Any]:
    """Does the project's review pay? Label error on gold and audits before review and
    after each stage, per mode, with intervals and a verdict per stage (reviewers and
    admins: it carries gold answers' outcomes)."""
    runtime = service_of(request).runtime
    return await evaluation_of(runtime.engine, project, runtime.peers)


@router.post("/projects/{project}/flags/{labeler_id}/clear",
             response_model=FlagClearedOut,
             responses={404: {"description": "the labeler is not flagged"}})
async def clear_flag(
    project: Project,
    labeler_id: UserId,
    body: ClearFlagIn,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict[str, Any]:
    """Clear a labeler's deference flag after reviewing the evidence (admin).

    The router unpauses the labeler, and the monitor starts collecting evidence afresh:
    what led to this flag cannot flag them again, new deferring can.
    """
    try:
        return await service_of(request).clear_flag(project, labeler_id, principal.user_id,
                                                     body.note)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc

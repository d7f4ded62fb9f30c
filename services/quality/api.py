"""HTTP routes of the quality service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from shared.auth import Principal, project_access
from shared.limits import Note, Project, UserId
from shared.service import service_of

from .service import evaluation_of

router = APIRouter(prefix="/v1", tags=["quality"])


class ClearFlagIn(BaseModel):
    note: Note | None = Field(None, description="what the review found, for the record")


@router.get("/projects/{project}/quality")
async def get_quality(
    project: Project,
    request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> dict[str, Any]:
    """Counts, agreement, consensus and per-labeler gold and deference figures (reviewers
    and admins: a labeler's own gold count, read after a submit, would tell gold apart)."""
    return service_of(request).summary(project)


@router.get("/projects/{project}/evaluation")
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


@router.post("/projects/{project}/flags/{labeler_id}/clear")
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

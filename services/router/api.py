"""HTTP routes of the router: pull a task, submit, revise after the reveal, skip;
adjudication for reviewers; routing policy, gold set and pauses for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from shared.auth import CurrentPrincipal, Principal, authorize, project_access
from shared.limits import Count, Label, Project, TaskId, UserId, Version
from shared.service import service_of

from .gold import GoldItem
from .service import ReviewError, RouterService
from .tasks import ReviewTask

router = APIRouter(prefix="/v1", tags=["review"])


class TaskOut(BaseModel):
    """What a reviewer receives: identical in shape for normal and gold tasks."""

    task_id: str
    project: str
    item_id: str
    mode: str
    payload: dict[str, Any] | None
    options: list[str]
    prelabel: str | None = Field(description="the model's guess, shown only in prelabel mode")
    lease_expires_at: datetime


class AdjudicationTaskOut(TaskOut):
    labels_given: dict[str, str]
    consensus: str | None
    reason: str | None


class SubmitIn(BaseModel):
    """What the label store will hold (shared.limits): refused here with a 422, never
    acknowledged as recorded and refused by the store later."""

    label: Label
    duration_ms: Count | None = Field(
        None, description="kept only where the router cannot measure it: a submit records "
                          "the time from the labeler's lease of the task to the submit")
    guideline_version: Version | None = None


class ReviseIn(SubmitIn):
    """The same fields as a submit: a revision records what the submit records (its
    ``duration_ms`` as the client says: a revision has no lease to measure from)."""


class Reveal(BaseModel):
    model_label: str | None = None
    confidence: float | None = None
    model_version: str | None = None


class SubmitOut(BaseModel):
    event_id: str
    status: str
    late: bool
    reveal: Reveal


class GoldIn(BaseModel):
    items: list[GoldItem] = Field(min_length=1, max_length=100_000)


def _svc(request: Request) -> RouterService:
    return service_of(request)


def _raise(exc: ReviewError) -> HTTPException:
    return HTTPException(exc.status, detail=exc.message)


async def _task_for(request: Request, task_id: TaskId, principal: Principal
                    ) -> tuple[ReviewTask, str, str | None]:
    """The task, checked against the caller's token, and the caller's standing on it."""
    try:
        task, standing, detail = await _svc(request).task_for(task_id, principal.user_id)
    except ReviewError as exc:
        raise _raise(exc) from exc
    authorize(principal, task.project, task.capability)
    return task, standing, detail


@router.get("/projects/{project}/tasks/next", response_model=TaskOut,
            responses={204: {"description": "no task is waiting for this labeler"},
                       423: {"description": "this labeler is paused"}})
async def next_task(project: Project, request: Request) -> Any:
    """Lease the most uncertain waiting task; blind mode shows no model guess."""
    # The two hottest routes resolve the token inline rather than through FastAPI's
    # dependency solver (the same checks: shared.auth), which cost a tenth of a request.
    principal = await request.app.state.auth(request)
    authorize(principal, project, "labeler")
    try:
        task = await _svc(request).next_task(project, principal, raw=True)
    except ReviewError as exc:
        raise _raise(exc) from exc
    # Built by the service in TaskOut's shape; returned as is (no second validation pass on
    # the hottest route; tests/router/test_review_api.py checks the shape).
    if not task:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return Response(orjson.dumps(task), media_type="application/json")


@router.get("/projects/{project}/adjudications/next", response_model=AdjudicationTaskOut,
            responses={204: {"description": "nothing to adjudicate"}})
async def next_adjudication(
    project: Project, request: Request,
    principal: Annotated[Principal, Depends(project_access("reviewer"))],
) -> Any:
    """Lease an item whose labels disagree, with the labels given (reviewers only)."""
    task = await _svc(request).next_task(project, principal, kind="adjudication")
    return task if task else Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tasks/{task_id}/submit", response_model=SubmitOut)
async def submit(task_id: TaskId, body: SubmitIn, request: Request) -> Any:
    """Record the label with provenance, then reveal the model's label; repeats are harmless."""
    principal = await request.app.state.auth(request)  # inline, as in next_task
    svc = _svc(request)
    task = svc.handed_task(task_id)
    if task is None:  # handed out by another process (or before a restart): read it
        task, standing, detail = await _task_for(request, task_id, principal)
    else:  # the script that records the label decides the labeler's standing
        authorize(principal, task.project, task.capability)
        standing, detail = None, None
    try:
        result = await svc.submit(task, standing, detail, principal,
                                  body.label, body.duration_ms, body.guideline_version)
    except ReviewError as exc:
        raise _raise(exc) from exc
    reveal = {"model_label": None, "confidence": None, "model_version": None, **result.reveal}
    return Response(orjson.dumps({"event_id": result.event_id, "status": result.status,
                                  "late": result.late, "reveal": reveal}),
                    media_type="application/json")


@router.post("/tasks/{task_id}/revise")
async def revise(task_id: TaskId, body: ReviseIn, request: Request,
                 principal: CurrentPrincipal) -> dict[str, Any]:
    """Change a label after seeing the reveal: recorded as a separate, marked event."""
    task, _, _ = await _task_for(request, task_id, principal)
    try:
        return await _svc(request).revise(task, principal, body.label, body.duration_ms,
                                          body.guideline_version)
    except ReviewError as exc:
        raise _raise(exc) from exc


@router.post("/tasks/{task_id}/skip")
async def skip(task_id: TaskId, request: Request, principal: CurrentPrincipal) -> dict[str, str]:
    """Give the task back; it will not be handed to this labeler again."""
    task, _, _ = await _task_for(request, task_id, principal)
    try:
        outcome = await _svc(request).skip(task, principal)
    except ReviewError as exc:
        raise _raise(exc) from exc
    return {"task_id": task_id, "status": outcome}


@router.get("/projects/{project}/policy")
async def get_policy(project: Project, request: Request,
                     principal: Annotated[Principal, Depends(project_access("reviewer"))]
                     ) -> dict[str, Any]:
    """The routing policy, threshold and calibration (reviewers and admins: the count of
    calibration observations moves with ordinary submits, not gold ones)."""
    svc = _svc(request)
    policy = await svc.policy(project)
    return {**policy.model_dump(), "threshold_in_force": await svc.threshold(project, policy),
            "calibration": await svc.calibration(project)}


@router.post("/projects/{project}/policy/recalibrate")
async def recalibrate(project: Project, request: Request,
                      principal: Annotated[Principal, Depends(project_access("admin"))]
                      ) -> dict[str, Any]:
    """Decide the auto-accept threshold now from the reviews since the last decision
    (admin), instead of when the window is due. ``decided`` False: there was too little
    evidence to test (or the policy is fixed) and the threshold in force stays."""
    svc = _svc(request)
    estimate = await svc.recalibrate(project, force=True)
    out: dict[str, Any] = {"decided": bool(estimate and estimate.tested)}
    if estimate is not None:
        out["estimate"] = {"threshold": estimate.threshold, "precision": estimate.precision,
                           "lower_bound": estimate.lower_bound,
                           "effective_n": estimate.effective_n,
                           "calibrated": estimate.calibrated, "tested": estimate.tested}
    return {"threshold_in_force": await svc.threshold(project), **out}


@router.post("/projects/{project}/gold")
async def add_gold(project: Project, body: GoldIn, request: Request,
                   principal: Annotated[Principal, Depends(project_access("admin"))]
                   ) -> dict[str, Any]:
    """Add or replace gold items (known answers, optional planted wrong pre-labels)."""
    return {"project": project, "stored": await _svc(request).add_gold(project, body.items)}


@router.get("/projects/{project}/gold")
async def list_gold(project: Project, request: Request,
                    principal: Annotated[Principal, Depends(project_access("admin"))]
                    ) -> dict[str, Any]:
    items = await _svc(request).gold_items(project)
    return {"project": project, "items": [g.model_dump() for g in items]}


@router.get("/projects/{project}/queue")
async def queue_state(project: Project, request: Request,
                      principal: Annotated[Principal, Depends(project_access("reviewer"))]
                      ) -> dict[str, Any]:
    """Queue depths (reviewers and admins; dropped tasks and pauses for admins). Not for
    labelers: a gold task leaves the depth unchanged, which would tell it apart."""
    svc = _svc(request)
    body: dict[str, Any] = {"project": project, "depth": await svc.queue.depth(project),
                            "adjudication_depth": await svc.queue.depth(project, "adjudication")}
    if principal.may_in(project, "admin"):
        body["dropped"] = await svc.queue.dropped(project)
        body["paused"] = await svc.paused(project)
    return body


@router.delete("/projects/{project}/paused/{labeler}")
async def unpause(project: Project, labeler: UserId, request: Request,
                  principal: Annotated[Principal, Depends(project_access("admin"))]
                  ) -> dict[str, Any]:
    """Let a paused labeler take tasks again (admin)."""
    return {"labeler": labeler, "unpaused": await _svc(request).unpause(project, labeler)}

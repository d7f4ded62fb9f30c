"""HTTP routes of the router: pull a task, submit, revise after the reveal, skip;
adjudication for reviewers; routing policy, gold set and pauses for admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import streams
from shared.auth import CurrentPrincipal, Principal, authorize, project_access, require_known
from shared.bus import validation_reason
from shared.events import CANDIDATES_MAX, Candidate, ComparisonEvent, Verdict
from shared.limits import (
    CandidateId,
    Count,
    ItemId,
    JsonObject,
    Label,
    Note,
    Project,
    TaskId,
    Text,
    UserId,
    Version,
)
from shared.projects import RoutingPolicy
from shared.service import service_of

from .comparisons import Answer
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


class RevisedOut(BaseModel):
    event_id: str
    status: str
    supersedes: str = Field(description="the event of the submit this revision replaces")


class SkippedOut(BaseModel):
    task_id: str
    status: str


class PolicyOut(RoutingPolicy):
    """The routing policy with the threshold in force and the calibration behind it."""

    model_config = ConfigDict(extra="allow")
    threshold_in_force: float
    calibration: dict[str, Any] = Field(
        description="the last decision: threshold, precision, bound, observations")


class Estimate(BaseModel):
    threshold: float
    precision: float | None
    lower_bound: float | None
    effective_n: float
    calibrated: bool
    tested: bool


class RecalibratedOut(BaseModel):
    threshold_in_force: float
    decided: bool = Field(description="False: too little evidence (or a fixed policy)")
    estimate: Estimate | None = None


class GoldStored(BaseModel):
    project: str
    stored: int


class GoldOut(BaseModel):
    project: str
    items: list[GoldItem]


class DroppedTask(BaseModel):
    """A task dropped because the queue was full (the lowest priority went)."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    item_id: str | bool | None = None
    priority: float | str | None = None
    dropped_at: float | str | None = None


class QueueOut(BaseModel):
    project: str
    depth: int
    adjudication_depth: int
    dropped: list[DroppedTask] | None = Field(None, description="admins only")
    paused: list[str] | None = Field(None, description="paused labelers; admins only")


class UnpausedOut(BaseModel):
    labeler: str
    unpaused: bool


# What a task route answers besides the errors every route has (ReviewError's statuses).
TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such task"},
    409: {"description": "the task is not handed to this labeler, or already finished"},
}


class ShownCandidate(BaseModel):
    position: int = Field(description="1-based, in the order drawn for this reviewer")
    text: str


class ComparisonTaskOut(BaseModel):
    """A comparison as a reviewer sees it: candidates by position, never by id or model."""

    task_id: str
    project: str
    comparison_id: str
    prompt: str
    payload: dict[str, Any] | None
    candidates: list[ShownCandidate]
    lease_expires_at: datetime


class ComparisonIn(BaseModel):
    """One comparison to queue: the fields of a ``loopwise:comparisons`` event."""

    model_config = {"extra": "forbid", "allow_inf_nan": False}
    event_id: uuid.UUID | None = None
    comparison_id: ItemId
    prompt: Text
    candidates: list[Candidate] = Field(min_length=2, max_length=CANDIDATES_MAX)
    payload: JsonObject | None = None
    priority: float | None = None
    gold_choice: CandidateId | None = None


class ComparisonsIn(BaseModel):
    comparisons: list[ComparisonIn] = Field(min_length=1, max_length=10_000)


class PreferenceIn(BaseModel):
    """A reviewer's verdict, in the positions they were shown."""

    verdict: Verdict
    chosen: int | None = Field(None, ge=1, le=CANDIDATES_MAX,
                               description="'better': the position of the better one")
    ranking: list[int] = Field(default_factory=list, max_length=CANDIDATES_MAX,
                               description="'ranked': every position, best first")
    reason: Note | None = None
    duration_ms: Count | None = None
    guideline_version: Version | None = None


class RevealedCandidate(BaseModel):
    position: int
    candidate_id: str
    model: str | None


class PreferenceOut(BaseModel):
    event_id: str
    status: str
    late: bool
    reveal: dict[str, list[RevealedCandidate]]


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
    await require_known(request, principal, project)
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


@router.post("/tasks/{task_id}/submit", response_model=SubmitOut, responses=TASK_ERRORS)
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


@router.post("/tasks/{task_id}/revise", response_model=RevisedOut, responses=TASK_ERRORS)
async def revise(task_id: TaskId, body: ReviseIn, request: Request,
                 principal: CurrentPrincipal) -> dict[str, Any]:
    """Change a label after seeing the reveal: recorded as a separate, marked event."""
    task, _, _ = await _task_for(request, task_id, principal)
    try:
        return await _svc(request).revise(task, principal, body.label, body.duration_ms,
                                          body.guideline_version)
    except ReviewError as exc:
        raise _raise(exc) from exc


@router.post("/tasks/{task_id}/skip", response_model=SkippedOut, responses=TASK_ERRORS)
async def skip(task_id: TaskId, request: Request, principal: CurrentPrincipal) -> dict[str, str]:
    """Give the task back; it will not be handed to this labeler again."""
    task, _, _ = await _task_for(request, task_id, principal)
    try:
        outcome = await _svc(request).skip(task, principal)
    except ReviewError as exc:
        raise _raise(exc) from exc
    return {"task_id": task_id, "status": outcome}


class ComparisonsPublished(BaseModel):
    project: str
    published: int
    event_ids: list[str]


@router.post("/projects/{project}/comparisons", status_code=202,
             response_model=ComparisonsPublished)
async def post_comparisons(
    project: Project, body: ComparisonsIn, request: Request,
    principal: Annotated[Principal, Depends(project_access("admin"))],
) -> dict[str, Any]:
    """Queue comparisons (admins and services): each is checked here as the
    ``loopwise:comparisons`` event it becomes (a 422 with the reason, never a later dead
    letter) and published to that stream, where the router and the scorer take it."""
    try:
        events = [ComparisonEvent.model_validate({**c.model_dump(exclude_unset=True),
                                                  "project": project})
                  for c in body.comparisons]
    except ValidationError as exc:
        raise HTTPException(422, detail=validation_reason(exc)) from exc
    await _svc(request).runtime.bus.publish(streams.COMPARISONS, events)
    return {"project": project, "published": len(events),
            "event_ids": [str(e.event_id) for e in events]}


@router.get("/projects/{project}/comparisons/next", response_model=ComparisonTaskOut,
            responses={204: {"description": "no comparison is waiting for this reviewer"},
                       423: {"description": "this labeler is paused"}})
async def next_comparison(
    project: Project, request: Request,
    principal: Annotated[Principal, Depends(project_access("labeler"))],
) -> Any:
    """Lease the next comparison: candidates in an order drawn for this reviewer."""
    try:
        task = await _svc(request).next_comparison(project, principal)
    except ReviewError as exc:
        raise _raise(exc) from exc
    return task if task else Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/comparisons/{task_id}/submit", response_model=PreferenceOut)
async def submit_comparison(task_id: TaskId, body: PreferenceIn, request: Request,
                            principal: CurrentPrincipal) -> Any:
    """Record the preference with the order shown, then reveal which candidate and model
    sat at each position; a repeat returns the first."""
    task, standing, detail = await _task_for(request, task_id, principal)
    answer = Answer(verdict=body.verdict, chosen=body.chosen, ranking=tuple(body.ranking),
                    reason=body.reason)
    try:
        result = await _svc(request).submit_comparison(
            task, standing, detail, principal, answer, body.duration_ms,
            body.guideline_version)
    except ReviewError as exc:
        raise _raise(exc) from exc
    return {"event_id": result.event_id, "status": result.status, "late": result.late,
            "reveal": result.reveal}


@router.get("/projects/{project}/policy", response_model=PolicyOut)
async def get_policy(project: Project, request: Request,
                     principal: Annotated[Principal, Depends(project_access("reviewer"))]
                     ) -> dict[str, Any]:
    """The routing policy, threshold and calibration (reviewers and admins: the count of
    calibration observations moves with ordinary submits, not gold ones)."""
    svc = _svc(request)
    policy = await svc.policy(project)
    return {**policy.model_dump(), "threshold_in_force": await svc.threshold(project, policy),
            "calibration": await svc.calibration(project)}


@router.post("/projects/{project}/policy/recalibrate", response_model=RecalibratedOut)
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


@router.post("/projects/{project}/gold", response_model=GoldStored)
async def add_gold(project: Project, body: GoldIn, request: Request,
                   principal: Annotated[Principal, Depends(project_access("admin", creates=True))]
                   ) -> dict[str, Any]:
    """Add or replace gold items (known answers, optional planted wrong pre-labels)."""
    return {"project": project, "stored": await _svc(request).add_gold(project, body.items)}


@router.get("/projects/{project}/gold", response_model=GoldOut)
async def list_gold(project: Project, request: Request,
                    principal: Annotated[Principal, Depends(project_access("admin"))]
                    ) -> dict[str, Any]:
    items = await _svc(request).gold_items(project)
    return {"project": project, "items": [g.model_dump() for g in items]}


@router.get("/projects/{project}/queue", response_model=QueueOut)
async def queue_state(project: Project, request: Request,
                      principal: Annotated[Principal, Depends(project_access("reviewer"))]
                      ) -> dict[str, Any]:
    """Queue depths (reviewers and admins; dropped tasks and pauses for admins). Not for
    labelers: a gold task leaves the depth unchanged, which would tell it apart."""
    svc = _svc(request)
    body: dict[str, Any] = {"project": project, "depth": await svc.queue.depth(project),
                            "adjudication_depth": await svc.queue.depth(project, "adjudication"),
                            "comparison_depth": await svc.queue.depth(project, "comparison")}
    if principal.may_in(project, "admin"):
        body["dropped"] = await svc.queue.dropped(project)
        body["paused"] = await svc.paused(project)
    return body


@router.delete("/projects/{project}/paused/{labeler}", response_model=UnpausedOut)
async def unpause(project: Project, labeler: UserId, request: Request,
                  principal: Annotated[Principal, Depends(project_access("admin"))]
                  ) -> dict[str, Any]:
    """Let a paused labeler take tasks again (admin)."""
    return {"labeler": labeler, "unpaused": await _svc(request).unpause(project, labeler)}
